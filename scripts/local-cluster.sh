#!/usr/bin/env bash
# Starts a local Cairn cluster on loopback — a coordinator, three storage nodes and a gateway —
# with data in ./.cairn-data, and stops it cleanly on Ctrl-C. Running it again resumes the same
# data (nodes keep their ids in their data folders).
#
#   --memory   a throwaway cluster: every process keeps its data in memory (storage.engine =
#              memory), nothing is written to disk but logs, and nothing survives Ctrl-C.
#   --tls      mutual TLS everywhere and auth on: a throw-away CA and certificates per role are
#              made in $DATA/tls (cairnctl dev certs, once) and every process uses them; the
#              gateway requires a client certificate, user root (the client certificate's name,
#              no password) gets the root role and auth is enabled. Prints the cairnctl flags.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=disk
TLS=0
for argument in "$@"; do
    case "$argument" in
        --memory) ENGINE=memory ;;
        --tls) TLS=1 ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "local-cluster: unknown argument $argument (try --help)" >&2
            exit 2
            ;;
    esac
done

source scripts/lib/prepare.sh

SHARDS="${CAIRN_LOCAL_SHARDS:-8}"
DATA="${CAIRN_LOCAL_DATA:-$PWD/.cairn-data}"
cairn_build
BIN="$CARGO_TARGET_DIR/debug"

pids=()
stop() {
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap stop INT TERM

mkdir -p "$DATA"
CTL_FLAGS=""
if [ "$TLS" = 1 ]; then
    CERTS="$DATA/tls"
    if [ ! -f "$CERTS/ca.pem" ]; then
        "$BIN/cairnctl" dev certs --out "$CERTS" --hosts 127.0.0.1,localhost >/dev/null
    fi
    CTL_FLAGS="--cacert $CERTS/ca.pem --cert $CERTS/client.pem --key $CERTS/client-key.pem "
fi
# The [tls] section of a process of role $1, as environment (CAIRN_TLS__*), in TLS_ENV. `env`
# execs the binary, so "$!" stays the process's own pid.
tls_env() {
    TLS_ENV=()
    if [ "$TLS" = 1 ]; then
        TLS_ENV=(CAIRN_TLS__CERT_FILE="$CERTS/$1.pem" CAIRN_TLS__KEY_FILE="$CERTS/$1-key.pem"
            CAIRN_TLS__CA_FILE="$CERTS/ca.pem" CAIRN_PUBLIC_TLS__CLIENT_AUTH=required)
    fi
}
tls_env coordinator
env "${TLS_ENV[@]}" "$BIN/cairn-coordinator" --member-id 1 --listen-address 127.0.0.1:7001 --data-dir "$DATA/coordinator" \
    --storage-engine "$ENGINE" \
    --shard-count "$SHARDS" --replication-factor 3 --metrics-listen-address 127.0.0.1:9001 \
    >>"$DATA/coordinator.log" 2>&1 &
pids+=("$!")
for id in 1 2 3; do
    tls_env node
    env "${TLS_ENV[@]}" "$BIN/cairn-node" --listen-address "127.0.0.1:710$id" --data-dir "$DATA/node-$id" \
        --storage-engine "$ENGINE" \
        --coordinators 127.0.0.1:7001 --labels "zone=local-$id" \
        --metrics-listen-address "127.0.0.1:910$id" >>"$DATA/node-$id.log" 2>&1 &
    pids+=("$!")
done
tls_env gateway
env "${TLS_ENV[@]}" "$BIN/cairn-gateway" --listen-address 127.0.0.1:7000 --coordinators 127.0.0.1:7001 \
    --metrics-listen-address 127.0.0.1:9000 >>"$DATA/gateway.log" 2>&1 &
pids+=("$!")
# Ready once the gateway has a shard map from the coordinator (its /readyz).
for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null http://127.0.0.1:9000/readyz 2>/dev/null; then break; fi
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "local-cluster: a process exited at start; see the logs in $DATA/*.log" >&2
            stop
            exit 1
        fi
    done
    sleep 0.5
done
if [ "$TLS" = 1 ]; then
    # Auth on, as a secure cluster runs: the client certificate's common name (root) is the
    # user. Skipped when a resumed cluster has it on already.
    ctl() { "$BIN/cairnctl" $CTL_FLAGS --endpoints 127.0.0.1:7000 "$@"; }
    if ! ctl auth status 2>/dev/null | grep -Eq 'enabled +true'; then
        ctl user list 2>/dev/null | grep -q '^root' || ctl user add root --no-password >/dev/null
        ctl user grant-role root root >/dev/null
        ctl auth enable >/dev/null
    fi
fi
if [ "$ENGINE" = memory ]; then
    where="IN MEMORY: nothing is written to disk but the logs in $DATA/*.log, and everything is lost on Ctrl-C"
else
    where="data in $DATA, logs in $DATA/*.log"
fi
if [ "$TLS" = 1 ]; then
    where="$where; mutual TLS and auth on (user root by its client certificate), certificates in $CERTS"
fi
cat <<INFO
Cairn is running ($SHARDS shards, 3 replicas each; $where):
  gateway      127.0.0.1:7000   <- clients and cairnctl connect here
  coordinator  127.0.0.1:7001
  nodes        127.0.0.1:7101, 127.0.0.1:7102, 127.0.0.1:7103
  metrics and health (/metrics, /livez, /readyz): gateway http://127.0.0.1:9000,
               coordinator :9001, nodes :9101-9103
Try (in another terminal):
  $BIN/cairnctl ${CTL_FLAGS}put greeting hello
  $BIN/cairnctl ${CTL_FLAGS}get greeting
  $BIN/cairnctl ${CTL_FLAGS}scan --prefix gr
  $BIN/cairnctl ${CTL_FLAGS}txn put-if-absent lock me
  $BIN/cairnctl ${CTL_FLAGS}cluster status
  $BIN/cairnctl ${CTL_FLAGS}--output json cluster members
Press Ctrl-C to stop.
INFO
wait
