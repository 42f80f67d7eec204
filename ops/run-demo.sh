#!/usr/bin/env bash
# ops/run-demo.sh BUILD_DIR — what `make run` does after building: starts one ternd on
# loopback with its embedded defaults (data in var/data), creates the demo domain and
# user, prints how to reach it, writes var/demo.env, and stops everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
TERND=$BUILD/proxy/ternd
TERNCTL=$BUILD/ops/ternctl
VAR=var
DATA=$VAR/data
SOCK=$DATA/admin.sock
ENV=$VAR/demo.env
DEMO_DOMAIN=example.test
DEMO_USER=demo@$DEMO_DOMAIN

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
echo "  try: swaks --server 127.0.0.1:$(p submission) --tls --auth PLAIN --auth-user $DEMO_USER --auth-password '$PASSWORD' --to $DEMO_USER"
echo "Ctrl-C stops it."
wait "$PID"
