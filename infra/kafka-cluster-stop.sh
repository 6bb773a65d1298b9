#!/usr/bin/env bash
# Stop the local cluster of kafka-cluster-start.sh, or one node of it.
#
#   infra/kafka-cluster-stop.sh                  stop every node (TERM, then KILL after 30 s)
#   infra/kafka-cluster-stop.sh --node 2         stop node 2 cleanly
#   infra/kafka-cluster-stop.sh --node 2 --kill  kill -9 node 2 (a crash: no clean shutdown)
#   infra/kafka-cluster-stop.sh --wipe           stop every node and delete the cluster's data
#
# Env: see kafka-cluster-common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/kafka-cluster-common.sh"

only="" kill=0 wipe=0
while [ $# -gt 0 ]; do
  case "$1" in
    --node) only="${2:-}"; check_node "$only"; shift 2 ;;
    --kill) kill=1; shift ;;
    --wipe) wipe=1; shift ;;
    *) log "usage: $0 [--node ID [--kill]] [--wipe]"; exit 2 ;;
  esac
done
if [ "$kill" = 1 ] && [ -z "$only" ]; then
  log "--kill needs --node ID"
  exit 2
fi

nodes=$(seq 1 "$CLUSTER_NODES")
[ -n "$only" ] && nodes="$only"
for id in $nodes; do
  pidfile="$(node_pidfile "$id")"
  if [ "$kill" = 1 ]; then
    if pid_alive "$pidfile"; then
      kill -KILL "$(cat "$pidfile")"
      rm -f "$pidfile"
      log "node $id killed (SIGKILL)"
    else
      log "node $id is not running"
    fi
  else
    stop_pidfile "$pidfile" "node $id"
  fi
done
if [ "$wipe" = 1 ]; then
  rm -rf "$CLUSTER_DATA"
  log "removed $CLUSTER_DATA"
fi
