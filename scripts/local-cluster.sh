#!/usr/bin/env bash
# Starts a local Cairn cluster on loopback — a coordinator, three storage nodes and a gateway —
# with data in ./.cairn-data, and stops it cleanly on Ctrl-C. Running it again resumes the same
# data (nodes keep their ids in their data folders).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

SHARDS="${CAIRN_LOCAL_SHARDS:-8}"
DATA="${CAIRN_LOCAL_DATA:-$PWD/.cairn-data}"
cargo build --locked --bin cairn-node --bin cairn-coordinator --bin cairn-gateway --bin cairnctl
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
    --shard-count "$SHARDS" --replication-factor 3 --metrics-listen-address 127.0.0.1:9001 \
    >>"$DATA/coordinator.log" 2>&1 &
pids+=("$!")
for id in 1 2 3; do
    "$BIN/cairn-node" --listen-address "127.0.0.1:710$id" --data-dir "$DATA/node-$id" \
        --coordinators 127.0.0.1:7001 --labels "zone=local-$id" \
        --metrics-listen-address "127.0.0.1:910$id" >>"$DATA/node-$id.log" 2>&1 &
    pids+=("$!")
done
"$BIN/cairn-gateway" --listen-address 127.0.0.1:7000 --coordinators 127.0.0.1:7001 \
    --metrics-listen-address 127.0.0.1:9000 >>"$DATA/gateway.log" 2>&1 &
pids+=("$!")
cat <<INFO
Cairn is running ($SHARDS shards, 3 replicas each; data in $DATA, logs in $DATA/*.log):
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
