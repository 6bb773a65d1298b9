#!/usr/bin/env bash
# Start a local multi-broker KRaft cluster on loopback (for tests and benches), or one node.
#
#   infra/kafka-cluster-start.sh            start every node not running, wait until all answer
#   infra/kafka-cluster-start.sh --node 2   (re)start node 2 only, e.g. after a kill -9
#
# Nodes are combined broker+controller JVMs (why: kafka-cluster-common.sh). Topics default
# to replication factor 3 (or N when smaller) and min.insync.replicas=2: with acks=all a
# write survives one node dying. Failure detection is tuned for loopback (a dead node is
# fenced within ~3 s instead of the default 9 s), so a test sees a quick leader change.
# Prints the bootstrap servers on stdout. Storage is formatted on first use (one cluster
# id for every node). Env: see kafka-cluster-common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/kafka-cluster-common.sh"

only=""
if [ "${1:-}" = "--node" ]; then
  only="${2:-}"
  check_node "$only"
elif [ -n "${1:-}" ]; then
  log "usage: $0 [--node ID]"
  exit 2
fi

"$INFRA_DIR/kafka-fetch.sh"
mkdir -p "$CLUSTER_DATA"
replication=$((CLUSTER_NODES < 3 ? CLUSTER_NODES : 3))
min_isr=$((replication > 2 ? 2 : 1))
voters=()
for id in $(seq 1 "$CLUSTER_NODES"); do voters+=("$id@127.0.0.1:$(controller_port "$id")"); done
voters="$(IFS=,; echo "${voters[*]}")"
if [ ! -f "$CLUSTER_DATA/cluster-id" ]; then
  java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid > "$CLUSTER_DATA/cluster-id"
fi
cluster_id="$(cat "$CLUSTER_DATA/cluster-id")"

# start_node ID: write its config, format its storage once, launch it in the background.
start_node() {
  local id="$1" dir port cport config
  dir="$(node_dir "$id")"
  port="$(node_port "$id")"
  cport="$(controller_port "$id")"
  if pid_alive "$(node_pidfile "$id")"; then
    log "node $id already running on 127.0.0.1:$port (pid $(cat "$(node_pidfile "$id")"))"
    return 0
  fi
  for p in "$port" "$cport"; do
    if port_open "$p"; then
      log "port $p of node $id is taken by another process; set SONICBUS_KAFKA_CLUSTER_PORT"
      exit 1
    fi
  done
  mkdir -p "$dir"
  config="$dir/server.properties"
  cat > "$config" <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/log
num.partitions=1
default.replication.factor=$replication
min.insync.replicas=$min_isr
auto.create.topics.enable=false
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=10000
num.network.threads=2
num.io.threads=4
num.replica.fetchers=1
background.threads=4
log.cleaner.threads=1
log.cleaner.backoff.ms=1000
message.max.bytes=10485760
replica.fetch.max.bytes=10485760
PROPS
  cat > "$dir/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = WARN
PROPS
  local java_cmd=(java "-Xms$CLUSTER_HEAP" "-Xmx$CLUSTER_HEAP" -XX:+UseG1GC
    -XX:ActiveProcessorCount=2 -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$KAFKA_LIBS/*")
  if [ ! -f "$dir/log/meta.properties" ]; then
    "${java_cmd[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" >/dev/null
  fi
  : > "$dir/server.log"
  log "starting node $id on 127.0.0.1:$port (controller $cport, heap $CLUSTER_HEAP)"
  setsid nohup "${java_cmd[@]}" kafka.Kafka "$config" > "$dir/stdout.log" 2>&1 < /dev/null &
  echo $! > "$(node_pidfile "$id")"
}

# node_ready ID: its process lives, its port answers and its log says it started.
node_ready() {
  port_open "$(node_port "$1")" &&
    grep -q "Kafka Server started\|KafkaRaftServer.*started" "$(node_dir "$1")/server.log"
}

nodes=$(seq 1 "$CLUSTER_NODES")
[ -n "$only" ] && nodes="$only"
for id in $nodes; do start_node "$id"; done
for i in $(seq 1 180); do
  waiting=0
  for id in $nodes; do
    if ! pid_alive "$(node_pidfile "$id")"; then
      log "node $id exited during start; last lines of its logs:"
      tail -n 20 "$(node_dir "$id")/stdout.log" "$(node_dir "$id")/server.log" >&2 || true
      rm -f "$(node_pidfile "$id")"
      exit 1
    fi
    node_ready "$id" || waiting=1
  done
  if [ "$waiting" = 0 ]; then
    log "cluster ready after $((i / 2)) s: $(bootstrap_servers)"
    bootstrap_servers
    exit 0
  fi
  sleep 0.5
done
log "the cluster did not become ready in 90 s; see $CLUSTER_DATA/node-*/server.log"
exit 1
