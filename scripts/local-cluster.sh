#!/usr/bin/env bash
# Starts a local Cairn cluster on loopback — a coordinator, three storage nodes and a gateway —
# with data in ./.cairn-data, and stops it cleanly on Ctrl-C. Running it again resumes the same
# data (nodes keep their ids in their data folders).
#
#   --memory   a throwaway cluster: every process keeps its data in memory (storage.engine =
#              memory), nothing is written to disk but logs, and nothing survives Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=disk
for argument in "$@"; do
    case "$argument" in
        --memory) ENGINE=memory ;;
        -h | --help)
            sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
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
"$BIN/cairn-coordinator" --member-id 1 --listen-address 127.0.0.1:7001 --data-dir "$DATA/coordinator" \
    --storage-engine "$ENGINE" \
    --shard-count "$SHARDS" --replication-factor 3 --metrics-listen-address 127.0.0.1:9001 \
    >>"$DATA/coordinator.log" 2>&1 &
pids+=("$!")
for id in 1 2 3; do
    "$BIN/cairn-node" --listen-address "127.0.0.1:710$id" --data-dir "$DATA/node-$id" \
        --storage-engine "$ENGINE" \
        --coordinators 127.0.0.1:7001 --labels "zone=local-$id" \
        --metrics-listen-address "127.0.0.1:910$id" >>"$DATA/node-$id.log" 2>&1 &
    pids+=("$!")
done
"$BIN/cairn-gateway" --listen-address 127.0.0.1:7000 --coordinators 127.0.0.1:7001 \
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
if [ "$ENGINE" = memory ]; then
    where="IN MEMORY: nothing is written to disk but the logs in $DATA/*.log, and everything is lost on Ctrl-C"
else
    where="data in $DATA, logs in $DATA/*.log"
fi
cat <<INFO
Cairn is running ($SHARDS shards, 3 replicas each; $where):
  gateway      127.0.0.1:7000   <- clients and cairnctl connect here
  coordinator  127.0.0.1:7001
  nodes        127.0.0.1:7101, 127.0.0.1:7102, 127.0.0.1:7103
  metrics and health (/metrics, /livez, /readyz): gateway http://127.0.0.1:9000,
               coordinator :9001, nodes :9101-9103
Try (in another terminal):
  $BIN/cairnctl put greeting hello
  $BIN/cairnctl get greeting
  $BIN/cairnctl scan --prefix gr
  $BIN/cairnctl txn put-if-absent lock me
  $BIN/cairnctl cluster status
  $BIN/cairnctl --output json cluster members
Press Ctrl-C to stop.
INFO
wait
