#!/usr/bin/env bash
# Start a single-node KRaft Kafka broker on loopback, or reuse the one running.
# Formats storage on first use. Waits until the broker answers.
# Env: SONICBUS_KAFKA__LOCAL_PORT (9092), SONICBUS_KAFKA__LOCAL_HEAP (512m),
#      SONICBUS_KAFKA_DATA (data dir), SONICBUS_CACHE_DIR, SONICBUS_HOME,
#      SONICBUS_KAFKA_LISTEN_HOST (127.0.0.1; 0.0.0.0 for other network namespaces/hosts)
#      and SONICBUS_KAFKA_ADVERTISED_HOST (127.0.0.1): the address clients are told to use;
#      SONICBUS_KAFKA_EXTRA_CONFIG (a properties file appended to server.properties: its values
#      win, e.g. a SASL_SSL listener in place of PLAINTEXT; tests/fixtures/secure_kafka.py),
#      SONICBUS_KAFKA_FORMAT_ARGS (more arguments of the first storage format, split on spaces:
#      KRaft SCRAM users, --add-scram SCRAM-SHA-512=[name=NAME,password=SECRET]).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pidfile="$KAFKA_DATA/kafka.pid"
if pid_alive "$pidfile"; then
  # Ours, running or still starting (another caller started it): wait for its port.
  for i in $(seq 1 120); do
    if port_open "$KAFKA_PORT"; then
      log "Kafka already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile"))"
      exit 0
    fi
    sleep 0.5
  done
  log "Kafka (pid $(cat "$pidfile")) is not answering on port $KAFKA_PORT; see $KAFKA_DATA/server.log"
  exit 1
fi
if port_open "$KAFKA_PORT"; then
  log "port $KAFKA_PORT is taken by another process; set SONICBUS_KAFKA__LOCAL_PORT"
  exit 1
fi
"$INFRA_DIR/kafka-fetch.sh"
mkdir -p "$KAFKA_DATA"
config="$KAFKA_DATA/server.properties"
cat > "$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://${SONICBUS_KAFKA_LISTEN_HOST:-127.0.0.1}:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://${SONICBUS_KAFKA_ADVERTISED_HOST:-127.0.0.1}:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA/log
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
message.max.bytes=10485760
PROPS
if [ -n "${SONICBUS_KAFKA_EXTRA_CONFIG:-}" ]; then
  cat "$SONICBUS_KAFKA_EXTRA_CONFIG" >> "$config"
fi
cat > "$KAFKA_DATA/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $KAFKA_DATA/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = WARN
PROPS
java_cmd=(java "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$KAFKA_DATA/log4j2.properties" -cp "$KAFKA_LIBS/*")
if [ ! -f "$KAFKA_DATA/log/meta.properties" ]; then
  cluster_id="$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid)"
  log "formatting KRaft storage in $KAFKA_DATA/log (cluster $cluster_id)"
  read -ra format_args <<< "${SONICBUS_KAFKA_FORMAT_ARGS:-}"
  "${java_cmd[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" \
    ${format_args[@]+"${format_args[@]}"} >/dev/null
fi
: > "$KAFKA_DATA/server.log"
log "starting Kafka on 127.0.0.1:$KAFKA_PORT (heap $KAFKA_HEAP, data $KAFKA_DATA)"
setsid nohup "${java_cmd[@]}" kafka.Kafka "$config" > "$KAFKA_DATA/stdout.log" 2>&1 < /dev/null &
echo $! > "$pidfile"
for i in $(seq 1 120); do
  if ! pid_alive "$pidfile"; then
    log "Kafka exited during start; last lines of its logs:"
    tail -n 20 "$KAFKA_DATA/stdout.log" "$KAFKA_DATA/server.log" >&2 || true
    rm -f "$pidfile"
    exit 1
  fi
  if port_open "$KAFKA_PORT" && grep -q "Kafka Server started\|KafkaRaftServer.*started" "$KAFKA_DATA/server.log"; then
    log "Kafka ready after $((i / 2)) s (pid $(cat "$pidfile"))"
    exit 0
  fi
  sleep 0.5
done
log "Kafka did not become ready in 60 s; see $KAFKA_DATA/server.log"
exit 1
