#!/usr/bin/env bash
# Builds Cairn's fuzz targets (fuzz/, one per decoder family that meets bytes from outside
# the process: docs/security.md "Fuzzing", D100) with libFuzzer on stable Rust, and runs each
# for a bounded time over a copy of its committed seed corpus.
#
#   scripts/fuzz.sh                     every target, CAIRN_FUZZ_SECS (20) seconds each
#   scripts/fuzz.sh TARGET [SECONDS]    one target (longer: scripts/fuzz.sh node_request 600)
#   scripts/fuzz.sh --build             build only
#   scripts/fuzz.sh --list              the targets
#   scripts/fuzz.sh --seeds             rewrite fuzz/corpus/ with the seed generator
#                                       (fuzz/tests/seeds.rs) after a format changed
#
# A run never writes into fuzz/corpus/: it fuzzes a copy in a temporary folder. A crash fails
# the run, names the target and the crashing input, kept under FUZZ_DIR/found/crashes/TARGET/
# (or CAIRN_FUZZ_KEEP=DIR, which also keeps the grown corpora), and prints it in base64.
# Replay it with `FUZZ_DIR/HOST/fuzz/TARGET INPUT`, then make it a #[test] in the crate that
# owns the decoder and a seed in fuzz/corpus/TARGET/.
#
# Prints one line per target, `fuzz target NAME: ok (...)` or `fuzz target NAME: FAILED
# (...)`, which scripts/test.sh counts.
#
# How it builds: RUSTFLAGS that turn on LLVM's SanitizerCoverage (what `cargo fuzz` passes,
# without a sanitizer, which needs nightly), for the target triple only so that build scripts
# and proc macros are built plainly; libfuzzer-sys compiles libFuzzer with the C++ compiler.
# Output goes to a folder of its own beside the main build's (default
# /var/cache/cairn/fuzz-target), so a new clone reuses it; RocksDB's C++ is the one compiled
# for the main build (scripts/lib/rocksdb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(mvcc_record raft_payload snapshot_file node_request gateway_request auth_token auth_message coordinator_message)

mode=run
only=""
secs="${CAIRN_FUZZ_SECS:-20}"
case "${1:-}" in
    --build) mode=build ;;
    --seeds) mode=seeds ;;
    --list)
        printf '%s\n' "${TARGETS[@]}"
        exit 0
        ;;
    "") ;;
    -*)
        echo "fuzz: unknown option $1 (see the top of $0)" >&2
        exit 2
        ;;
    *)
        only="$1"
        secs="${2:-$secs}"
        if ! printf '%s\n' "${TARGETS[@]}" | grep -qx -- "$only"; then
            echo "fuzz: no target $only; the targets: ${TARGETS[*]}" >&2
            exit 2
        fi
        ;;
esac

source scripts/lib/prepare.sh

# The fuzz crate has a lock file of its own; it must link the same librocksdb-sys as the
# RocksDB library compiled for the main lock (scripts/lib/rocksdb.sh keys it by version).
rocksdb_version() {
    awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' "$1"
}
if [ "$(rocksdb_version Cargo.lock)" != "$(rocksdb_version fuzz/Cargo.lock)" ]; then
    echo "fuzz: fuzz/Cargo.lock has librocksdb-sys $(rocksdb_version fuzz/Cargo.lock), Cargo.lock has $(rocksdb_version Cargo.lock): update fuzz/Cargo.lock (cargo update --manifest-path fuzz/Cargo.toml -p librocksdb-sys)" >&2
    exit 1
fi

if [ "$CARGO_TARGET_DIR" = "$PWD/target" ]; then
    fuzz_dir="$CARGO_TARGET_DIR/fuzz"
else
    fuzz_dir="${CAIRN_FUZZ_TARGET_DIR:-$(dirname "$CARGO_TARGET_DIR")/fuzz-target}"
fi
export CARGO_TARGET_DIR="$fuzz_dir"

if [ "$mode" = seeds ]; then
    # The generator is an ordinary test, built without instrumentation.
    CAIRN_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --locked --test seeds
    echo "fuzz: seeds written to fuzz/corpus/" >&2
    exit 0
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
# `cargo fuzz build` without a sanitizer: edge coverage as inline 8-bit counters with a PC
# table (what libFuzzer reads as `cov:` and `ft:`), and comparison operands for its
# dictionary. `--cfg fuzzing` is what crates test to know they are fuzzed.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
bin_dir="$fuzz_dir/$host/fuzz"
export CAIRN_FUZZ_BIN_DIR="$bin_dir"

targets=("${TARGETS[@]}")
if [ -n "$only" ]; then
    targets=("$only")
fi

started=$SECONDS
bins=()
for target in "${targets[@]}"; do bins+=(--bin "$target"); done
if ! cargo build --manifest-path fuzz/Cargo.toml --locked --profile fuzz --target "$host" "${bins[@]}"; then
    for target in "${targets[@]}"; do
        echo "fuzz target $target: FAILED (the fuzz crate did not build)"
    done
    exit 1
fi
echo "fuzz: built in $((SECONDS - started)) s into $bin_dir" >&2
if [ "$mode" = build ]; then
    exit 0
fi

work="$(mktemp -d)"
keep="${CAIRN_FUZZ_KEEP:-$fuzz_dir/found}"
trap 'rm -rf "$work"' EXIT
failed=0
results=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    crashes="$work/crashes/$target"
    log="$work/$target.log"
    mkdir -p "$corpus" "$crashes"
    cp fuzz/corpus/"$target"/* "$corpus"/
    seeds=$(find "$corpus" -type f | wc -l)
    echo "fuzz: $target for $secs s over $seeds seeds" >&2
    set +e
    # -max_total_time bounds the run; the outer timeout only guards against a hang libFuzzer
    # cannot end itself. -timeout: one input taking longer is a failure (a hang on bad input).
    timeout --kill-after=10 $((secs + 120)) "$bin_dir/$target" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1
    status=$?
    set -e
    inited=$(grep -m1 -o 'INITED cov: [0-9]* ft: [0-9]*' "$log" || true)
    done_line=$(grep -o 'DONE *cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    summary="${runs:-?} runs (${speed:-?}/s), ${inited:-no INITED line} -> ${done_line:-no DONE line}"
    crash=$(find "$crashes" -type f | head -n 1)
    if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
        failed=1
        echo "---- $target: the last lines of libFuzzer's output" >&2
        tail -n 40 "$log" >&2
        kept=""
        if [ -n "$crash" ]; then
            # Kept outside the temporary folder (and outside the clone), and printed, so that
            # a CI log alone is enough to replay it.
            mkdir -p "$keep/crashes/$target"
            cp "$crash" "$keep/crashes/$target/"
            kept="$keep/crashes/$target/$(basename "$crash")"
            echo "---- $target: the crashing input, base64 ($(wc -c <"$crash") bytes)" >&2
            head -c 4096 "$crash" | base64 >&2
        fi
        results+=("fuzz target $target: FAILED (exit $status; crashing input: ${kept:-none written}; $summary)")
    else
        results+=("fuzz target $target: ok ($summary)")
    fi
    if [ -n "${CAIRN_FUZZ_KEEP:-}" ]; then
        mkdir -p "$keep/corpus/$target"
        cp "$corpus"/* "$keep/corpus/$target/"
    fi
done
printf '%s\n' "${results[@]}"
echo "fuzz: done in $((SECONDS - started)) s" >&2
if [ "$failed" -ne 0 ]; then
    echo "fuzz: a target failed; replay a crashing input with $bin_dir/TARGET INPUT" >&2
    exit 1
fi
