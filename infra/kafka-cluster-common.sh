# Shared values of the local multi-broker cluster scripts; sourced, never run.
#
# The cluster: N KRaft nodes on loopback, each one JVM that is both broker and controller
# (process.roles=broker,controller). Combined nodes, not separate controllers, because
# this cluster exists to test and bench on one small machine: three JVMs instead of six
# (each ~300 MB and a share of two cores), and a three-voter quorum still survives one
# node dying, which is the fault the tests inject. A production cluster runs separate
# controllers (docs/scaling.md): a broker under load then never slows the quorum down.
#
# Env: SONICBUS_KAFKA_CLUSTER_NODES (3), SONICBUS_KAFKA_CLUSTER_PORT (9192: node i listens
# on PORT+i-1 for clients and on PORT+NODES+i-1 for the controller quorum),
# SONICBUS_KAFKA_CLUSTER_HEAP (320m per node), SONICBUS_KAFKA_CLUSTER_DATA (data folder,
# one sub-folder per node), SONICBUS_CACHE_DIR, SONICBUS_HOME.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CLUSTER_NODES="${SONICBUS_KAFKA_CLUSTER_NODES:-3}"
CLUSTER_PORT="${SONICBUS_KAFKA_CLUSTER_PORT:-9192}"
CLUSTER_HEAP="${SONICBUS_KAFKA_CLUSTER_HEAP:-320m}"
CLUSTER_DATA="${SONICBUS_KAFKA_CLUSTER_DATA:-$SONICBUS_HOME/kafka-cluster-$CLUSTER_PORT}"

node_port() { echo $((CLUSTER_PORT + $1 - 1)); }
controller_port() { echo $((CLUSTER_PORT + CLUSTER_NODES + $1 - 1)); }
node_dir() { echo "$CLUSTER_DATA/node-$1"; }
node_pidfile() { echo "$CLUSTER_DATA/node-$1/kafka.pid"; }

# check_node ID: exit with a message unless ID is one of the cluster's node ids.
check_node() {
  if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt "$CLUSTER_NODES" ]; then
    log "node id must be 1..$CLUSTER_NODES, not '$1'"
    exit 2
  fi
}

bootstrap_servers() {
  local id servers=()
  for id in $(seq 1 "$CLUSTER_NODES"); do servers+=("127.0.0.1:$(node_port "$id")"); done
  (IFS=,; echo "${servers[*]}")
}
