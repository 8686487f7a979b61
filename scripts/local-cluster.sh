#!/usr/bin/env bash
# Starts a local Cairn cluster on loopback with data in ./.cairn-data, and stops it on Ctrl-C.
# Running it again resumes the same data. Today the cluster is three storage nodes with a
# static bootstrap (the coordinator and gateway are not built yet).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

SHARDS="${CAIRN_LOCAL_SHARDS:-8}"
DATA="${CAIRN_LOCAL_DATA:-$PWD/.cairn-data}"
cargo build --locked --bin cairn-node
NODE_BIN="$CARGO_TARGET_DIR/debug/cairn-node"

members="1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
pids=()
stop() {
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap stop INT TERM

mkdir -p "$DATA"
for id in 1 2 3; do
    "$NODE_BIN" --node-id "$id" --listen-address "127.0.0.1:710$id" --data-dir "$DATA/node-$id" \
        --bootstrap-shard-count "$SHARDS" --bootstrap-members "$members" \
        >>"$DATA/node-$id.log" 2>&1 &
    pids+=("$!")
done
echo "Cairn storage nodes running: 127.0.0.1:7101, :7102, :7103 ($SHARDS shards, data in $DATA)."
echo "Logs: $DATA/node-*.log. Press Ctrl-C to stop."
wait
