#!/usr/bin/env bash
# ops/run-demo.sh BUILD_DIR [NODES] — what `make run` does after building.
#   NODES=1: one ternd on loopback with its embedded defaults (data in var/data).
#   NODES=2..5: a cluster on 127.0.0.1 behind HAProxy. Node i keeps its data in var/node<i>
#   and listens on the classic ports + 10000*i (raft 7001+10000*i, rpc 7101+10000*i);
#   node 1 forms the cluster, the others join it; HAProxy (var/haproxy.cfg, written by
#   `ternctl haproxy-config`) takes the classic ports and connects to the nodes from
#   127.0.0.2, the one address the nodes require a PROXY header from.
# Either way it creates the demo domain and user, prints how to reach them, writes
# var/demo.env, and stops everything on Ctrl-C. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
NODES=${2:-1}
TERND=$BUILD/proxy/ternd
TERNCTL=$BUILD/ops/ternctl
VAR=var
ENV=$VAR/demo.env
DEMO_DOMAIN=example.test
DEMO_USER=demo@$DEMO_DOMAIN

case "$NODES" in
'' | *[!0-9]*) NODES=0 ;;
esac
if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 5 ]; then # node i's ports are classic + 10000*i < 65536
  echo "run-demo: NODES must be a number from 1 to 5" >&2
  exit 1
fi

# demo_user: the demo domain and user through ctl(), a password kept from $ENV when it
# still works; sets PASSWORD, and NEW=1 when the password is new.
demo_user() {
  ctl domain list | grep -qx "domain=$DEMO_DOMAIN" || ctl domain add "$DEMO_DOMAIN"

  PASSWORD=
  if [ -f "$ENV" ]; then
    PASSWORD=$(sed -n "s/^DEMO_PASSWORD='\(.*\)'$/\1/p" "$ENV")
  fi
  if ! ctl user show "$DEMO_USER" >/dev/null 2>&1; then
    PASSWORD=$(openssl rand -base64 18 | tr -d '/+=' | cut -c1-16)
    printf '%s\n' "$PASSWORD" | ctl user add "$DEMO_USER" --password-stdin >/dev/null
    NEW=1
  elif [ -z "$PASSWORD" ] || ! printf '%s\n' "$PASSWORD" | ctl user verify "$DEMO_USER" --password-stdin >/dev/null 2>&1; then
    PASSWORD=$(openssl rand -base64 18 | tr -d '/+=' | cut -c1-16)
    printf '%s\n' "$PASSWORD" | ctl user passwd "$DEMO_USER" --password-stdin >/dev/null
    NEW=1
  fi
}

# ---------------------------------------------------------------------------------------
# one node, as `make run` has always done

run_single() {
  DATA=$VAR/data
  SOCK=$DATA/admin.sock

  mkdir -p "$VAR"
  "$TERND" --data "$DATA" &
  PID=$!
  stop() {
    trap - INT TERM EXIT
    if kill -0 "$PID" 2>/dev/null; then
      echo "run-demo: stopping ternd (pid $PID)"
      kill -TERM "$PID" 2>/dev/null || true
      wait "$PID" 2>/dev/null || true
    fi
  }
  trap stop EXIT
  trap 'stop; exit 0' INT TERM

  ctl() { "$TERNCTL" --socket "$SOCK" "$@"; }

  # wait (bounded) until the node answers and leads
  for _ in $(seq 1 150); do
    kill -0 "$PID" 2>/dev/null || { echo "run-demo: ternd exited early" >&2; exit 1; }
    if [ -S "$SOCK" ] && ctl status 2>/dev/null | grep -q 'role=leader'; then
      break
    fi
    sleep 0.1
  done
  ctl status | grep -q 'role=leader' || { echo "run-demo: ternd did not become ready" >&2; exit 1; }

  demo_user

  port() { # the port of a listen.* key, empty while that protocol is not served yet
    "$TERND" --data "$DATA" --print-config | sed -n "s/^$1 *= *\"\{0,1\}[^:]*:\([0-9]*\)\"\{0,1\}$/\1/p" | head -1
  }
  SERVED=" smtp submission smtps imap imaps pop3 pop3s " # the protocols this build serves
  p() { case "$SERVED" in *" $1 "*) port "$1" ;; *) echo "" ;; esac; }

  umask 077
  cat > "$ENV" <<ENVEOF
# written by make run ($(date -u +%FT%TZ)); source it from scripts
SMTP_PORT='$(p smtp)'
SUBMISSION_PORT='$(p submission)'
SMTPS_PORT='$(p smtps)'
IMAP_PORT='$(p imap)'
IMAPS_PORT='$(p imaps)'
POP3_PORT='$(p pop3)'
POP3S_PORT='$(p pop3s)'
ADMIN_SOCKET='$(realpath "$SOCK")'
TERND_PID='$PID'
DEMO_USER='$DEMO_USER'
DEMO_PASSWORD='$PASSWORD'
ENVEOF

  echo
  echo "Tern is running (pid $PID), data in $DATA"
  echo "  admin:     $TERNCTL --socket $SOCK status"
  echo "  demo user: $DEMO_USER"
  if [ "${NEW:-0}" = 1 ]; then
    echo "  password:  $PASSWORD   (new; also in $ENV)"
  else
    echo "  password:  (unchanged; see $ENV)"
  fi
  echo "  SMTP (MX):           127.0.0.1:$(p smtp)"
  echo "  submission STARTTLS: 127.0.0.1:$(p submission)   implicit TLS: 127.0.0.1:$(p smtps)"
  echo "  IMAP STARTTLS:       127.0.0.1:$(p imap)   implicit TLS: 127.0.0.1:$(p imaps)"
  echo "  POP3 STLS:           127.0.0.1:$(p pop3)   implicit TLS: 127.0.0.1:$(p pop3s)"
  echo "  try: swaks --server 127.0.0.1:$(p submission) --tls --auth PLAIN --auth-user $DEMO_USER --auth-password '$PASSWORD' --from $DEMO_USER --to $DEMO_USER"
  echo "Ctrl-C stops it."
  wait "$PID"
}

# ---------------------------------------------------------------------------------------
# a cluster behind HAProxy

PROTOS=(smtp submission smtps imap imaps pop3 pop3s)
declare -A CLASSIC=([smtp]=2525 [submission]=5870 [smtps]=4650 [imap]=1143 [imaps]=9930
  [pop3]=1110 [pop3s]=9950)
HAPROXY_BIND=127.0.0.1
HAPROXY_SOURCE=127.0.0.2 # HAProxy's address towards the nodes: their net.proxy_trusted
HAPROXY_STATS=127.0.0.1:8404
HAPROXY_CFG=$VAR/haproxy.cfg
HAPROXY_LOG=$VAR/haproxy.log
STOP_WAIT=100    # tenths of a second for a process to end after SIGTERM, then SIGKILL
READY_WAIT=150   # tenths of a second for a node to answer, or to lead
JOIN_TRIES=5     # `cluster join` attempts per node...
JOIN_WAIT=60     # ...of at most this many seconds each
MEMBERS_WAIT=150 # tenths of a second for every node to be listed by cluster.members
CHECK_WAIT=150   # tenths of a second for HAProxy's checks to pass on every server
declare -A NODE_PID=()
HAPROXY_PID=

node_data() { echo "$VAR/node$1"; }
node_sock() { echo "$VAR/node$1/admin.sock"; }
node_log() { echo "$VAR/node$1.log"; }
node_port() { echo $((CLASSIC[$2] + 10000 * $1)); } # node_port I PROTO
node_raft() { echo "127.0.0.1:$((7001 + 10000 * $1))"; }
node_rpc() { echo "127.0.0.1:$((7101 + 10000 * $1))"; }
nctl() { # nctl I ARGS...: ternctl on node I's admin socket
  local i=$1
  shift
  "$TERNCTL" --socket "$(node_sock "$i")" "$@"
}

# stop_all: SIGTERM to HAProxy and every node, a bounded wait, then SIGKILL.
stop_all() {
  trap - INT TERM EXIT
  local pids=() pid any i
  [ -n "$HAPROXY_PID" ] && pids+=("$HAPROXY_PID")
  for i in "${!NODE_PID[@]}"; do pids+=("${NODE_PID[$i]}"); done
  [ ${#pids[@]} -gt 0 ] || return 0
  echo "run-demo: stopping ${HAPROXY_PID:+HAProxy (pid $HAPROXY_PID) and }${#NODE_PID[@]} node(s)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 "$STOP_WAIT"); do
    any=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && any=1; done
    [ "$any" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "run-demo: pid $pid still running after SIGTERM; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

die() {
  echo "run-demo: $*" >&2
  exit 1 # the EXIT trap stops the rest
}

# all_alive: dies, showing the end of its log, when a process we started has exited.
all_alive() {
  local i
  for i in "${!NODE_PID[@]}"; do
    if ! kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
      echo "run-demo: node $i (pid ${NODE_PID[$i]}) exited; the end of $(node_log "$i"):" >&2
      tail -n 20 "$(node_log "$i")" >&2 || true
      unset "NODE_PID[$i]"
      exit 1
    fi
  done
  if [ -n "$HAPROXY_PID" ] && ! kill -0 "$HAPROXY_PID" 2>/dev/null; then
    echo "run-demo: HAProxy (pid $HAPROXY_PID) exited; the end of $HAPROXY_LOG:" >&2
    tail -n 20 "$HAPROXY_LOG" >&2 || true
    HAPROXY_PID=
    exit 1
  fi
}

# start_node I [ARGS...]: node I in the background, its output in var/node<I>.log.
start_node() {
  local i=$1 p
  shift
  local args=(--data "$(node_data "$i")" --set "node.id=$i" --set "node.zone=z$i"
    --set "raft.address=$(node_raft "$i")" --set "cluster.rpc_address=$(node_rpc "$i")"
    --set "net.proxy_trusted=$HAPROXY_SOURCE")
  for p in "${PROTOS[@]}"; do
    args+=(--set "listen.$p=127.0.0.1:$(node_port "$i" "$p")")
  done
  mkdir -p "$(node_data "$i")"
  "$TERND" "${args[@]}" "$@" >"$(node_log "$i")" 2>&1 &
  NODE_PID[$i]=$!
}

# wait_status I PATTERN: until node I's `ternctl status` matches PATTERN (bounded).
wait_status() {
  for _ in $(seq 1 "$READY_WAIT"); do
    all_alive
    if [ -S "$(node_sock "$1")" ] && timeout 5 "$TERNCTL" --socket "$(node_sock "$1")" status 2>/dev/null | grep -q -- "$2"; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# members: node 1's cluster.members lines (empty when it does not answer).
members() { timeout 10 "$TERNCTL" --socket "$(node_sock 1)" cluster members 2>/dev/null || true; }
is_member() { members | grep -Eq "^member (.* )?id=$1( |\$)"; }

# join_node I: node I asks node 1 (any member would do) to add it; a few bounded tries.
join_node() {
  local out try
  for try in $(seq 1 "$JOIN_TRIES"); do
    all_alive
    if out=$(timeout "$JOIN_WAIT" "$TERNCTL" --socket "$(node_sock "$1")" cluster join "$(node_rpc 1)" 2>&1); then
      return 0
    fi
    echo "run-demo: node $1: cluster join, try $try of $JOIN_TRIES: $out" >&2
    is_member "$1" && return 0
    sleep 2
  done
  die "node $1 could not join the cluster (see $(node_log "$1"))"
}

# haproxy_checks: "OK TOTAL": servers whose check passed (L7OK), servers in all.
haproxy_checks() {
  # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET /stats;csv HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
    cat <&3' "${HAPROXY_STATS%:*}" "${HAPROXY_STATS##*:}" 2>/dev/null |
    tr -d '\r' | awk -F, '
      /^# pxname,/ { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; hdr = 1; next }
      hdr && $col["svname"] ~ /^n[0-9]+$/ { total++; if ($col["check_status"] == "L7OK") ok++ }
      END { print ok + 0, total + 0 }' || echo "0 0"
}

run_cluster() {
  local i p out secret n ok total

  command -v haproxy >/dev/null || die "haproxy is not installed (ops/install-deps.sh installs it)"
  mkdir -p "$VAR"
  trap stop_all EXIT
  trap 'stop_all; exit 0' INT TERM

  # node 1: forms a one-node cluster at its first start (cluster.bootstrap=yes)
  start_node 1
  wait_status 1 'role=' || die "node 1 does not answer on $(node_sock 1) (see $(node_log 1))"
  n=$(members | grep -c '^member ' || true)
  secret=
  if [ "${n:-0}" -le 1 ]; then
    wait_status 1 'role=leader' || die "node 1 did not become leader (see $(node_log 1))"
    if out=$(nctl 1 cluster init 2>&1); then
      secret=$(printf '%s\n' "$out" | sed -n 's/^secret_file=//p' | head -1)
    else
      echo "run-demo: cluster init: $out" >&2
    fi
  fi
  # a cluster formed by an earlier run: the secret is where node 1 created it
  [ -n "$secret" ] || secret=$(realpath "$(node_data 1)/cluster.secret")
  [ -f "$secret" ] || die "no cluster secret at $secret"

  # nodes 2..N: wait to be joined, then join through node 1
  for i in $(seq 2 "$NODES"); do
    start_node "$i" --set cluster.bootstrap=no --set "cluster.secret_file=$secret"
  done
  for i in $(seq 2 "$NODES"); do
    wait_status "$i" 'role=' || die "node $i does not answer on $(node_sock "$i") (see $(node_log "$i"))"
    is_member "$i" || join_node "$i"
  done
  # a leader, and every node listed (each writes its own member record once it votes)
  wait_status 1 'leader=[1-9]' || die "the cluster has no leader (see $VAR/node*.log)"
  for _ in $(seq 1 "$MEMBERS_WAIT"); do
    all_alive
    n=$(members | grep -c '^member ' || true)
    [ "${n:-0}" -ge "$NODES" ] && break
    sleep 0.1
  done
  [ "${n:-0}" -ge "$NODES" ] || die "cluster members lists ${n:-0} of $NODES nodes: $(members)"

  SOCK=$(node_sock 1)
  ctl() { "$TERNCTL" --socket "$SOCK" "$@"; }
  demo_user

  # HAProxy in front: the configuration comes from the members themselves
  nctl 1 haproxy-config --bind "$HAPROXY_BIND" --source "$HAPROXY_SOURCE" \
    --ports "smtp=${CLASSIC[smtp]},submission=${CLASSIC[submission]},smtps=${CLASSIC[smtps]},imap=${CLASSIC[imap]},imaps=${CLASSIC[imaps]},pop3=${CLASSIC[pop3]},pop3s=${CLASSIC[pop3s]}" \
    --stats "$HAPROXY_STATS" >"$HAPROXY_CFG.new" || die "ternctl haproxy-config failed"
  mv "$HAPROXY_CFG.new" "$HAPROXY_CFG"
  out=$(haproxy -c -f "$HAPROXY_CFG" 2>&1) || die "haproxy -c refuses $HAPROXY_CFG: $out"
  haproxy -db -f "$HAPROXY_CFG" >"$HAPROXY_LOG" 2>&1 &
  HAPROXY_PID=$!
  for _ in $(seq 1 "$CHECK_WAIT"); do
    all_alive
    read -r ok total < <(haproxy_checks)
    [ "$total" -gt 0 ] && [ "$ok" = "$total" ] && break
    sleep 0.1
  done
  if [ "$total" = 0 ] || [ "$ok" != "$total" ]; then
    echo "run-demo: warning: $ok of $total HAProxy servers pass their health check (see http://$HAPROXY_STATS/stats)" >&2
  fi

  # demo.env: the classic names are HAProxy's ports (empty for a protocol no node serves)
  fport() { grep -qx "frontend ft_$1" "$HAPROXY_CFG" && echo "${CLASSIC[$1]}" || echo ""; }
  umask 077
  {
    echo "# written by make run ($(date -u +%FT%TZ)); source it from scripts"
    echo "# $NODES nodes behind HAProxy: the *_PORT names are HAProxy's; NODE<i>_* are each node's own"
    for p in "${PROTOS[@]}"; do echo "${p^^}_PORT='$(fport "$p")'"; done
    echo "ADMIN_SOCKET='$(realpath "$(node_sock 1)")'"
    echo "TERND_PID='${NODE_PID[1]}'"
    echo "DEMO_USER='$DEMO_USER'"
    echo "DEMO_PASSWORD='$PASSWORD'"
    echo "NODES='$NODES'"
    echo "HAPROXY_PID='$HAPROXY_PID'"
    echo "HAPROXY_CONFIG='$(realpath "$HAPROXY_CFG")'"
    echo "HAPROXY_STATS_URL='http://$HAPROXY_STATS/stats'"
    echo "HAPROXY_METRICS_URL='http://$HAPROXY_STATS/metrics'"
    echo "HAPROXY_SOURCE='$HAPROXY_SOURCE'"
    for i in $(seq 1 "$NODES"); do
      echo "NODE${i}_ADMIN_SOCKET='$(realpath "$(node_sock "$i")")'"
      echo "NODE${i}_PIDFILE='$(realpath "$(node_data "$i")")/ternd.pid'"
      echo "NODE${i}_PID='${NODE_PID[$i]}'"
      for p in "${PROTOS[@]}"; do echo "NODE${i}_${p^^}_PORT='$(node_port "$i" "$p")'"; done
      echo "NODE${i}_RAFT_ADDRESS='$(node_raft "$i")'"
      echo "NODE${i}_RPC_ADDRESS='$(node_rpc "$i")'"
    done
  } >"$ENV"

  echo
  echo "Tern is running: $NODES nodes behind HAProxy (pid $HAPROXY_PID)"
  echo "  admin:     $TERNCTL --socket $(node_sock 1) cluster status"
  echo "  demo user: $DEMO_USER"
  if [ "${NEW:-0}" = 1 ]; then
    echo "  password:  $PASSWORD   (new; also in $ENV)"
  else
    echo "  password:  (unchanged; see $ENV)"
  fi
  echo "  through HAProxy ($HAPROXY_CFG, log $HAPROXY_LOG):"
  echo "  SMTP (MX):           $HAPROXY_BIND:$(fport smtp)"
  echo "  submission STARTTLS: $HAPROXY_BIND:$(fport submission)   implicit TLS: $HAPROXY_BIND:$(fport smtps)"
  echo "  IMAP STARTTLS:       $HAPROXY_BIND:$(fport imap)   implicit TLS: $HAPROXY_BIND:$(fport imaps)"
  echo "  POP3 STLS:           $HAPROXY_BIND:$(fport pop3)   implicit TLS: $HAPROXY_BIND:$(fport pop3s)"
  echo "  stats:               http://$HAPROXY_STATS/stats   metrics: http://$HAPROXY_STATS/metrics"
  for i in $(seq 1 "$NODES"); do
    echo "  node $i (pid ${NODE_PID[$i]}, zone z$i): data $(node_data "$i"), log $(node_log "$i"), admin $(node_sock "$i")"
    echo "    ports: smtp $(node_port "$i" smtp), submission $(node_port "$i" submission), smtps $(node_port "$i" smtps), imap $(node_port "$i" imap), imaps $(node_port "$i" imaps), pop3 $(node_port "$i" pop3), pop3s $(node_port "$i" pop3s); raft $(node_raft "$i"), rpc $(node_rpc "$i")"
  done
  echo "  try: swaks --server $HAPROXY_BIND:$(fport submission) --tls --auth PLAIN --auth-user $DEMO_USER --auth-password '$PASSWORD' --from $DEMO_USER --to $DEMO_USER"
  echo "Ctrl-C stops it (HAProxy and every node)."

  # until Ctrl-C (the trap) or the end of any of them (then the EXIT trap stops the rest)
  while :; do
    all_alive
    wait -n || true
  done
}

if [ "$NODES" = 1 ]; then
  run_single
else
  run_cluster
fi
