#!/usr/bin/env bash
# deploy/kafka/kafka.sh - run a real single-node Apache Kafka broker (KRaft mode,
# combined broker+controller) for local development, the test suite and CI.
#
# Why this exists: the project needs a real Kafka on machines without a Docker
# engine. The only things we can count on everywhere are Java 17 and Maven, and
# Maven Central serves the broker itself (org.apache.kafka:kafka_2.13), so we
# fetch the jars with Maven (deploy/kafka/pom.xml) and run kafka.Kafka directly.
#
# Usage: deploy/kafka/kafka.sh up [--fresh] | down | status | logs [-f] [N] | reset | fetch
#
#   up       start the broker in the background and wait until it really serves
#            requests. Idempotent: exits 0 at once if a broker already answers.
#            --fresh wipes the data dir first (same as `reset` then `up`).
#   down     SIGTERM the broker, wait, then SIGKILL. Idempotent.
#   status   exit 0 if a broker answers on the port, 3 if nothing runs, 1 if our
#            process is alive but not answering (still starting / wedged).
#   logs     print the last N (default 200) lines of the broker log; -f follows.
#   reset    stop the broker and delete its data (topics, offsets, cluster id).
#            The downloaded jars are kept.
#   fetch    only download the jars (one-off, needs Maven) and start nothing;
#            the test suite's own brokers link them from the default home.
#
# Environment (all optional):
#   METERLINE_KAFKA_HOME   cache/state dir        (default <repo>/.cache/kafka)
#   KAFKA_PORT             client (PLAINTEXT) port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port  (default KAFKA_PORT+1)
#   KAFKA_START_TIMEOUT    seconds to wait for "up" (default 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS        JVM heap flags         (default "-Xms256m -Xmx512m")
#   KAFKA_JVM_OPTS         extra JVM flags appended to the defaults
#   JAVA_HOME              Java 17+ to use (else `java` from PATH)
#   MAVEN_OPTS             passed through to mvn, e.g. -Dmaven.repo.local=...
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
POM="$SCRIPT_DIR/pom.xml"

KAFKA_HOME_DIR=${METERLINE_KAFKA_HOME:-$REPO_ROOT/.cache/kafka}
# Absolute, because it ends up in server.properties and in the broker's command
# line (which `down` matches to recognise its own process).
[[ "$KAFKA_HOME_DIR" == /* ]] || KAFKA_HOME_DIR="$PWD/$KAFKA_HOME_DIR"
# Loopback only: this broker is for local dev/tests and must never be reachable
# from the network. 127.0.0.1 rather than "localhost" so clients never try ::1.
KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
# The machines have 2 cores; a small heap keeps the broker from competing with
# the test suite. 512 MiB is plenty for a dev broker.
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}

LIBS="$KAFKA_HOME_DIR/libs"
DATA="$KAFKA_HOME_DIR/data"
LOGS="$KAFKA_HOME_DIR/logs"
CONF="$KAFKA_HOME_DIR/config"
PIDFILE="$KAFKA_HOME_DIR/kafka.pid"
CLUSTER_ID_FILE="$KAFKA_HOME_DIR/cluster.id"
LIBS_STAMP="$LIBS/.pom.sha256"
SERVER_LOG="$LOGS/server.log"
JVM_OUT="$LOGS/kafka.out"

# The line KafkaRaftServer logs once startup (incl. broker unfencing) finished.
STARTED_MARKER='Kafka Server started'

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------

# True if something accepts TCP connections on host:port (bash /dev/tcp, so no
# nc/curl needed). `timeout` guards against a SYN that never gets an answer.
port_open() {
  timeout 2 bash -c ">/dev/tcp/$1/$2" 2>/dev/null
}

# True if a *Kafka broker* answers on host:port: send an ApiVersions v0 request
# and check the reply's correlation id. An open port alone is not enough (the
# port could belong to something else, or the broker could still be starting:
# KRaft brokers only start handling requests once they are unfenced). python3
# is used because it's everywhere this project runs; without it we fall back to
# the plain port check.
api_ok() {
  local host=$1 port=$2
  if ! command -v python3 >/dev/null 2>&1; then
    port_open "$host" "$port"
    return
  fi
  python3 - "$host" "$port" <<'PY' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
corr = 0x4D4C
client_id = b"meterline-kafka.sh"
# ApiVersions (key 18) v0, request header v1: key, version, correlation id, client id.
req = struct.pack(">hhih", 18, 0, corr, len(client_id)) + client_id
try:
    s = socket.create_connection((host, port), timeout=2)
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(req)) + req)
    def recvn(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", recvn(4))
    got_corr, err = struct.unpack(">ih", recvn(size)[:6])
    # 0 = OK; 35 = UNSUPPORTED_VERSION, which a broker that dropped v0 would
    # still send in v0 format - either way a live Kafka broker answered.
    sys.exit(0 if got_corr == corr and err in (0, 35) else 1)
except Exception:
    sys.exit(1)
PY
}

# Print the pid from the pid file if that process is alive AND is the broker
# this script started for this cache dir (pids get reused; never signal a
# stranger). Returns 1 otherwise.
our_pid() {
  local pid cmd
  [[ -s "$PIDFILE" ]] || return 1
  pid=$(<"$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  else
    cmd=$(ps -p "$pid" -o args= 2>/dev/null || true)
  fi
  [[ "$cmd" == *kafka.Kafka*"$CONF/server.properties"* ]] || return 1
  printf '%s\n' "$pid"
}

kafka_version() {
  local jar
  for jar in "$LIBS"/kafka_2.13-*.jar; do
    [[ -f "$jar" ]] || continue
    jar=${jar##*/kafka_2.13-}
    printf '%s\n' "${jar%.jar}"
    return 0
  done
  echo "?"
}

# ---------------------------------------------------------------------------
# Setup steps
# ---------------------------------------------------------------------------

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Kafka 4.x needs Java 17+; set JAVA_HOME)"
  local spec
  spec=$("$JAVA" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}')
  [[ "${spec%%.*}" =~ ^[0-9]+$ ]] || die "could not read the Java version from $JAVA"
  # Kafka 4.x brokers require Java 17 (clients still run on 11).
  (( ${spec%%.*} >= 17 )) || die "Java $spec found at $JAVA; the Kafka 4.x broker needs Java 17+ (set JAVA_HOME)"
}

# Copy the broker jars into $LIBS with Maven, unless they are already there for
# this exact pom.xml (the stamp is the pom's hash, so bumping kafka.version in
# the pom re-fetches). Downloads go to a temp dir that is renamed into place, so
# an interrupted download never leaves a half-filled libs dir that looks valid.
fetch_jars() {
  local want
  want=$(sha256sum "$POM" | cut -d' ' -f1)
  if [[ -f "$LIBS_STAMP" && "$(<"$LIBS_STAMP")" == "$want" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven is needed once to download the Kafka jars into $LIBS"
  log "fetching Kafka jars from Maven Central into $LIBS (one-off)..."
  local tmp="$KAFKA_HOME_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$LOGS"
  # -B/-q: CI-friendly; includeScope=runtime skips test deps. Output goes to a
  # file (Maven 3.8 still prints stray ANSI resets even with -q) and is shown
  # only on failure.
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" </dev/null >"$LOGS/mvn.out" 2>&1; then
    cat "$LOGS/mvn.out" >&2
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed (is Maven Central reachable?)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "mvn ran but no kafka_2.13 jar was copied"; }
  printf '%s\n' "$want" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

# (Re)write the configs on every start so that they always match this script
# and the current KAFKA_PORT/KAFKA_CONTROLLER_PORT. The quorum is declared with
# the static controller.quorum.voters (not the dynamic --standalone bootstrap),
# because a static quorum keeps no endpoint in the metadata log, so changing the
# ports later never conflicts with what was formatted.
write_config() {
  mkdir -p "$CONF" "$DATA" "$LOGS"
  cat >"$CONF/server.properties" <<EOF
# Generated by deploy/kafka/kafka.sh on every start - edit the script, not this file.
# KRaft combined mode: this single JVM is both the broker and the only controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$DATA

# One broker: every internal topic must be satisfiable with a single replica,
# otherwise consumer groups / transactions never get a coordinator.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# Tests start consumers and expect assignments immediately, not after 3 s.
group.initial.rebalance.delay.ms=0
# Topics are created explicitly by the app (12 partitions by default); a typo
# in a topic name must fail loudly rather than silently create a new topic.
num.partitions=12
auto.create.topics.enable=false

# Sized for a 2-core dev machine.
num.network.threads=2
num.io.threads=4
EOF

  # log4j2 (Kafka 4.x logs through slf4j -> log4j2): everything into one
  # rolling server.log, which is also where `up` looks for the "started" line.
  cat >"$CONF/log4j2.properties" <<EOF
# Generated by deploy/kafka/kafka.sh on every start.
status = warn
name = meterline-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.filePattern = $SERVER_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Per-request and per-partition state logs are very chatty at INFO.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

# KRaft storage must be formatted (meta.properties + bootstrap checkpoint)
# exactly once per data dir. The cluster id is kept next to it so a re-format
# after a partial wipe reuses the same id.
format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid=$(<"$CLUSTER_ID_FILE")
  else
    # A Kafka Uuid is 16 random bytes as unpadded base64url (22 chars); Kafka
    # itself avoids ids starting with '-' because they look like CLI flags.
    cid=-
    while [[ "$cid" == -* ]]; do
      cid=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    printf '%s\n' "$cid" >"$CLUSTER_ID_FILE"
  fi
  log "formatting KRaft storage in $DATA (cluster id $cid)"
  "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$CONF/log4j2.properties" \
    -cp "$LIBS/*" kafka.tools.StorageTool format \
    --config "$CONF/server.properties" --cluster-id "$cid" --ignore-formatted \
    >"$LOGS/format.out" 2>&1 || { cat "$LOGS/format.out" >&2; die "kafka-storage format failed"; }
}

print_failure_logs() {
  log "----- last 40 lines of $SERVER_LOG -----"
  tail -n 40 "$SERVER_LOG" 2>/dev/null >&2 || log "(no server.log)"
  if [[ -s "$JVM_OUT" ]]; then
    log "----- last 20 lines of $JVM_OUT (JVM stdout/stderr) -----"
    tail -n 20 "$JVM_OUT" >&2
  fi
}

# Wait until our process logged STARTED_MARKER *and* answers ApiVersions.
wait_ready() {
  local pid=$1 start=$SECONDS
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      print_failure_logs
      die "Kafka broker (pid $pid) exited during startup"
    fi
    if grep -qF "$STARTED_MARKER" "$SERVER_LOG" 2>/dev/null && api_ok "$KAFKA_HOST" "$KAFKA_PORT"; then
      return 0
    fi
    if (( SECONDS - start >= KAFKA_START_TIMEOUT )); then
      print_failure_logs
      # Don't leave a half-started broker behind: the next `up` starts clean.
      stop_pid "$pid" || true
      rm -f "$PIDFILE"
      die "Kafka broker not ready on $KAFKA_HOST:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s"
    fi
    sleep 0.5
  done
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  # A clean shutdown flushes the logs and writes a clean-shutdown marker, so the
  # next start skips log recovery; KRaft needs a few seconds for that.
  for ((i = 0; i < KAFKA_STOP_TIMEOUT * 4; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  log "broker (pid $pid) still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  die "could not kill pid $pid"
}

# Serialise up/down/reset (e.g. several pytest-xdist workers calling `up` at
# once) with flock where available. fd 9 must NOT leak into the broker JVM, or
# the lock would stay held for the broker's lifetime (see `9>&-` below).
take_lock() {
  mkdir -p "$KAFKA_HOME_DIR"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$KAFKA_HOME_DIR/.lock"
  flock -w 300 9 || die "timed out waiting for the lock on $KAFKA_HOME_DIR/.lock"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

cmd_up() {
  local fresh=0 arg pid t0=$SECONDS
  for arg in "$@"; do
    case "$arg" in
      --fresh) fresh=1 ;;
      *) die "unknown option for up: $arg" ;;
    esac
  done
  take_lock
  if (( fresh )); then
    do_down
    do_reset_data
  fi

  # Idempotence: whoever runs a broker on this port (us, docker, another
  # checkout), if it speaks Kafka we're done.
  if api_ok "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "Kafka already answering on $KAFKA_HOST:$KAFKA_PORT"
    return 0
  fi
  # Our broker is alive but still starting (a concurrent/earlier `up`): wait.
  if pid=$(our_pid); then
    log "Kafka (pid $pid) is starting; waiting for it"
    wait_ready "$pid"
    log "Kafka $(kafka_version) ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
    return 0
  fi
  rm -f "$PIDFILE"

  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is in use by something that is not a Kafka broker (set KAFKA_PORT)"
  fi
  if port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT"; then
    die "controller port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
  fi

  check_java
  fetch_jars
  write_config
  format_storage

  # Keep the previous run's log for post-mortems; the fresh server.log is what
  # wait_ready greps, so an old "started" line can't fool it.
  if [[ -f "$SERVER_LOG" ]]; then mv -f "$SERVER_LOG" "$SERVER_LOG.prev"; fi
  : >"$JVM_OUT"

  # shellcheck disable=SC2206  # heap/JVM opts are intentionally word-split
  local -a jvm=(
    $KAFKA_HEAP_OPTS
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true -XX:ErrorFile="$LOGS/hs_err_pid%p.log"
    -Dkafka.logs.dir="$LOGS"
    -Dlog4j2.configurationFile="$CONF/log4j2.properties"
    $KAFKA_JVM_OPTS
  )

  log "starting Kafka $(kafka_version) on $KAFKA_HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, data $DATA)"
  # setsid: own session, so Ctrl-C in the calling terminal or the caller's
  # process group being killed (make, pytest, CI step) doesn't take the broker
  # down with it. The inner bash writes its own pid and then execs java, so the
  # pid file holds the JVM's pid. stdin from /dev/null; lock fd 9 closed; cwd
  # is the cache dir, so the broker never sits in a directory the caller might
  # delete (e.g. a pytest tmp dir).
  local launcher=()
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
  (
    cd "$KAFKA_HOME_DIR"
    # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
    nohup "${launcher[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
      "$JAVA" "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$CONF/server.properties" \
      >>"$JVM_OUT" 2>&1 </dev/null 9>&- &
  )

  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s "$PIDFILE" ]] && break
    sleep 0.05
  done
  [[ -s "$PIDFILE" ]] || die "broker process did not start (no pid file)"
  pid=$(<"$PIDFILE")
  wait_ready "$pid"
  log "Kafka $(kafka_version) ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid) in $((SECONDS - t0))s"
}

do_down() {
  local pid
  if pid=$(our_pid); then
    log "stopping Kafka (pid $pid)"
    stop_pid "$pid"
    rm -f "$PIDFILE"
    log "stopped"
  else
    rm -f "$PIDFILE"
    if api_ok "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "a Kafka broker answers on $KAFKA_HOST:$KAFKA_PORT but was not started by this script for $KAFKA_HOME_DIR; leaving it alone"
    else
      log "not running"
    fi
  fi
}

do_reset_data() {
  log "wiping $DATA"
  rm -rf "$DATA" "$CLUSTER_ID_FILE"
}

cmd_down() {
  take_lock
  do_down
}

cmd_reset() {
  take_lock
  do_down
  do_reset_data
}

cmd_status() {
  local pid=""
  pid=$(our_pid) || pid=""
  if api_ok "$KAFKA_HOST" "$KAFKA_PORT"; then
    if [[ -n "$pid" ]]; then
      echo "running: Kafka $(kafka_version) on $KAFKA_HOST:$KAFKA_PORT (pid $pid, home $KAFKA_HOME_DIR)"
    else
      echo "running: a Kafka broker answers on $KAFKA_HOST:$KAFKA_PORT (not managed by this script)"
    fi
    return 0
  fi
  if [[ -n "$pid" ]]; then
    echo "starting or unhealthy: pid $pid alive but $KAFKA_HOST:$KAFKA_PORT does not answer"
    return 1
  fi
  echo "stopped"
  return 3
}

cmd_logs() {
  local follow=0 n=200 arg
  for arg in "$@"; do
    case "$arg" in
      -f | --follow) follow=1 ;;
      *[!0-9]* | '') die "usage: kafka.sh logs [-f] [N]" ;;
      *) n=$arg ;;
    esac
  done
  [[ -f "$SERVER_LOG" ]] || die "no log yet at $SERVER_LOG"
  if (( follow )); then
    exec tail -n "$n" -F "$SERVER_LOG"
  fi
  tail -n "$n" "$SERVER_LOG"
}

cmd_fetch() {
  take_lock
  fetch_jars
  log "Kafka $(kafka_version) jars in $LIBS"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  if [[ $# -gt 0 ]]; then shift; fi
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    reset) cmd_reset ;;
    fetch) cmd_fetch ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
