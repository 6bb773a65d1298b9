# Shared defaults of the infra scripts; sourced, never run.
# Every value can be overridden by the environment (the same names the Python side uses).
SONICBUS_CACHE_DIR="${SONICBUS_CACHE_DIR:-$HOME/.cache/sonicbus}"
SONICBUS_HOME="${SONICBUS_HOME:-$HOME/.local/share/sonicbus}"
KAFKA_PORT="${SONICBUS_KAFKA__LOCAL_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SONICBUS_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_HEAP="${SONICBUS_KAFKA__LOCAL_HEAP:-512m}"
KAFKA_DATA="${SONICBUS_KAFKA_DATA:-$SONICBUS_HOME/kafka-$KAFKA_PORT}"
KAFKA_LIBS="$SONICBUS_CACHE_DIR/kafka/libs"
MILVUS_PORT="${SONICBUS_MILVUS__LOCAL_PORT:-19530}"
MILVUS_DATA="${SONICBUS_MILVUS_DATA:-$SONICBUS_HOME/milvus-server-$MILVUS_PORT}"
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$INFRA_DIR")"

log() { printf '[infra] %s\n' "$*" >&2; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# proc_alive PID: true when PID runs. A killed process that its parent has not reaped yet (a
# zombie: `kill -0` still finds it) is not running; its ports and files are free again.
proc_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}

# pid_alive FILE: true when FILE holds the pid of a running process.
pid_alive() { [ -f "$1" ] && proc_alive "$(cat "$1")"; }

# stop_pidfile FILE NAME: TERM the process group, wait, then KILL what is left.
stop_pidfile() {
  local file="$1" name="$2" pid i
  if ! pid_alive "$file"; then
    rm -f "$file"
    log "$name is not running"
    return 0
  fi
  pid="$(cat "$file")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 60); do
    proc_alive "$pid" || break
    sleep 0.5
  done
  if proc_alive "$pid"; then
    log "$name did not stop in 30 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$file"
  log "$name stopped"
}

# Navidrome (built from its Go module by navidrome-fetch.sh). The admin password comes from
# SONICBUS_NAVIDROME__PASSWORD, else from $NAVIDROME_DATA/admin-password (made on first start).
NAVIDROME_VERSION="${SONICBUS_NAVIDROME_VERSION:-v0.63.2}"
NAVIDROME_BIN="$SONICBUS_CACHE_DIR/navidrome/$NAVIDROME_VERSION/navidrome"
NAVIDROME_PORT="${SONICBUS_NAVIDROME__LOCAL_PORT:-4533}"
NAVIDROME_MUSIC="${SONICBUS_NAVIDROME__MUSIC_FOLDER:-$HOME/Music}"
NAVIDROME_DATA="${SONICBUS_NAVIDROME_DATA:-$SONICBUS_HOME/navidrome-$NAVIDROME_PORT}"
NAVIDROME_USER="${SONICBUS_NAVIDROME__USER:-admin}"
NAVIDROME_PASSWORD_FILE="$NAVIDROME_DATA/admin-password"
