#!/usr/bin/env bash
# Measures etcd and Cairn side by side with cairn-bench, one system at a time, on loopback:
#   1. installs etcd (Debian etcd-server, etcd-client) and gnuplot when missing; builds the
#      binaries (release profile);
#   2. starts a 3-member etcd (fsync on: etcd's default), loads the records, runs every
#      workload at every concurrency, reads the members' peak RSS, stops it;
#   3. starts a Cairn cluster (a coordinator, 3 storage nodes, a gateway; replication 3,
#      fsync and group commit on: the defaults), does the same;
#   After each system's plaintext run, the TLS run: the system is started again from empty
#   data folders with mutual TLS on every connection (certificates from `cairnctl dev certs`
#   in $BENCH_DATA/tls; client certificates required, as scripts/local-cluster.sh --tls) and
#   the BENCH_TLS_WORKLOADS run again at the same concurrencies, the client over TLS with a
#   client certificate. Its results are the systems `etcd-tls` and `cairn-tls`.
#   4. writes the comparison section of docs/benchmarks/README.md (with a "TLS cost" table
#      when the TLS run ran), a CSV and a PNG plot.
#
# Settings (environment, with defaults):
#   BENCH_DURATION_SECS=10   measured seconds per point     BENCH_WARMUP_SECS=2
#   BENCH_CONCURRENCY="1 16 64 256"                          BENCH_WORKLOADS="W C A T"
#     (W writes, C reads, A half and half, B 95% reads, T cross-shard transactions: read two
#     keys on different shards of the Cairn cluster, write both in one transaction comparing
#     their mod revisions; etcd runs the same key pairs and the same transaction)
#   BENCH_RECORDS=10000  BENCH_KEY_SIZE=16  BENCH_VALUE_SIZE=256  BENCH_DISTRIBUTION=zipfian
#   BENCH_CONNECTIONS_MAX=8  connections per client process (min(clients, this))
#   BENCH_CAIRN_SHARDS=3     shards of the Cairn cluster (3: one shard leader per node; every
#                            Raft group batches per group, so fewer, busier groups cost less)
#   BENCH_CAIRN_GATEWAY_THREADS=0   the gateway's worker_threads (0: one per core)
#   BENCH_TLS_WORKLOADS="W C"   workloads of the TLS run (only those also in BENCH_WORKLOADS);
#                               empty: no TLS run
#   BENCH_SYSTEMS="etcd cairn"   BENCH_PROFILE=release
#   BENCH_BIN_DIR=               use the binaries in this folder instead of building (A/B runs)
#   BENCH_DATA=./.bench-data     data folders, logs and raw JSON results (wiped per run)
#   BENCH_OUT=docs/benchmarks    where README.md, cairn-vs-etcd.csv and .png go
# Every load loop is bounded by its duration; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

DURATION="${BENCH_DURATION_SECS:-10}"
WARMUP="${BENCH_WARMUP_SECS:-2}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16 64 256}"
WORKLOADS="${BENCH_WORKLOADS:-W C A T}"
# `-`, not `:-`: set and empty turns the TLS run off.
TLS_WORKLOADS_WANTED="${BENCH_TLS_WORKLOADS-W C}"
TLS_WORKLOADS=""
for workload in $TLS_WORKLOADS_WANTED; do
    if [[ " $WORKLOADS " == *" $workload "* ]]; then TLS_WORKLOADS+="${TLS_WORKLOADS:+ }$workload"; fi
done
RECORDS="${BENCH_RECORDS:-10000}"
KEY_SIZE="${BENCH_KEY_SIZE:-16}"
VALUE_SIZE="${BENCH_VALUE_SIZE:-256}"
DISTRIBUTION="${BENCH_DISTRIBUTION:-zipfian}"
CONNECTIONS_MAX="${BENCH_CONNECTIONS_MAX:-8}"
SHARDS="${BENCH_CAIRN_SHARDS:-3}"
GATEWAY_THREADS="${BENCH_CAIRN_GATEWAY_THREADS:-0}"
SYSTEMS="${BENCH_SYSTEMS:-etcd cairn}"
PROFILE="${BENCH_PROFILE:-release}"
WORK="${BENCH_DATA:-$PWD/.bench-data}"
OUT="${BENCH_OUT:-docs/benchmarks}"

# Ports below the test harness's random range (20000-60000), away from local-cluster.sh's.
ETCD_CLIENT_PORTS=(12379 12389 12399)
ETCD_PEER_PORTS=(12380 12390 12400)
CAIRN_GATEWAY=127.0.0.1:17000
CAIRN_COORDINATOR=127.0.0.1:17001
CAIRN_NODE_PORTS=(17101 17102 17103)

started_at=$(date +%s)
log() { echo "bench-compare [$(date -u +%H:%M:%S)]: $*" >&2; }
# cairn-bench and cairnctl read these; a plaintext run must not pick up the caller's.
unset CAIRN_CACERT CAIRN_CERT CAIRN_KEY

install_missing() { # command package...
    local command="$1"
    shift
    if ! command -v "$command" >/dev/null 2>&1; then
        log "installing $*"
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
    fi
}
install_missing etcd etcd-server etcd-client
install_missing gnuplot gnuplot-nox

profile_flag=()
profile_dir=debug
if [ "$PROFILE" = release ]; then
    profile_flag=(--release)
    profile_dir=release
fi
if [ -n "${BENCH_BIN_DIR:-}" ]; then
    BIN="$BENCH_BIN_DIR"
    for binary in cairn-node cairn-coordinator cairn-gateway cairnctl cairn-bench cairn-bench-report; do
        [ -x "$BIN/$binary" ] || { log "BENCH_BIN_DIR=$BIN has no $binary"; exit 2; }
    done
    log "using the binaries in $BIN (not building)"
else
    log "building ($PROFILE)"
    cargo build --locked "${profile_flag[@]}" --bin cairn-node --bin cairn-coordinator \
        --bin cairn-gateway --bin cairnctl --bin cairn-bench --bin cairn-bench-report
    BIN="$CARGO_TARGET_DIR/$profile_dir"
fi

rm -rf "$WORK"
mkdir -p "$WORK/results" "$WORK/logs"
CERTS="$WORK/tls"
if [ -n "$TLS_WORKLOADS" ]; then
    # One CA for both systems; every leaf is valid for 127.0.0.1 and localhost.
    "$BIN/cairnctl" dev certs --out "$CERTS" --hosts 127.0.0.1,localhost >/dev/null
fi
# The client's TLS flags (cairn-bench and cairnctl take the same): empty for plaintext.
CLIENT_TLS=()
META="$WORK/meta.md"
RSS="$WORK/rss.md"
: >"$RSS"
CPU="$WORK/cpu.md"
: >"$CPU"
TICKS_PER_SEC=$(getconf CLK_TCK)
server_pids=() # the processes of the system being measured, for CPU per operation

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_ports() {
    for port in "$@"; do
        if ! port_free "$port"; then
            log "port 127.0.0.1:$port is in use; stop what holds it and run again"
            exit 1
        fi
    done
}

wait_until() { # seconds description command...
    local seconds="$1" what="$2"
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${seconds}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
record_rss() { # system role pid
    local kib
    kib=$(peak_rss_kib "$3")
    echo "| $1 | $2 | $((kib / 1024)) |" >>"$RSS"
}

cpu_ticks() { # pid... -> user+system clock ticks used so far, summed
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

bench() { # target endpoints args...
    local target="$1" endpoints="$2"
    shift 2
    "$BIN/cairn-bench" --target "$target" --endpoints "$endpoints" "${CLIENT_TLS[@]}" \
        --record-count "$RECORDS" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" \
        --distribution "$DISTRIBUTION" "$@"
}

run_workloads() { # system target endpoints workloads (system: the target, or target-tls)
    local system="$1" target="$2" endpoints="$3" workloads="$4"
    log "$system: loading $RECORDS records"
    bench "$target" "$endpoints" --phase load --concurrency 64 \
        --output "$WORK/logs/$system-load.json" --quiet
    for workload in $workloads; do
        for clients in $CONCURRENCY; do
            local connections=$((clients < CONNECTIONS_MAX ? clients : CONNECTIONS_MAX))
            local result="$WORK/results/$system-$workload-c$clients.json"
            # T pairs keys of different Cairn shards: both systems get the same pairs.
            local pairs=()
            if [ "$workload" = T ]; then pairs=(--shard-count "$SHARDS"); fi
            local ticks_before client_secs ticks operations
            ticks_before=$(cpu_ticks "${server_pids[@]}")
            # bash's `time` reports the client's own CPU (user + system seconds).
            client_secs=$({ TIMEFORMAT='%3U %3S'; time bench "$target" "$endpoints" --phase run \
                --workload "$workload" "${pairs[@]}" --concurrency "$clients" --connections "$connections" \
                --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
                --label "$system $workload $clients" --output "$result" >/dev/null 2>&3; } 3>&2 2>&1)
            ticks=$(($(cpu_ticks "${server_pids[@]}") - ticks_before))
            operations=$(grep -o '"operations": *[0-9]*' "$result" | grep -o '[0-9]*$')
            # CPU covers the warm-up too: spread it over the operations of both periods.
            awk -v s="$system" -v w="$workload" -v c="$clients" -v t="$ticks" -v hz="$TICKS_PER_SEC" \
                -v cl="$client_secs" -v ops="$operations" -v d="$DURATION" -v wu="$WARMUP" 'BEGIN {
                    all = ops * (d + wu) / d; if (all < 1) all = 1; split(cl, u, " ");
                    printf "| %s | %s | %d | %.0f | %.0f |\n", s, w, c,
                        t / hz * 1e6 / all, (u[1] + u[2]) * 1e6 / all }' >>"$CPU"
        done
    done
}

declare -A load_before load_after
runs=() # the systems measured, in order: etcd, etcd-tls, cairn, cairn-tls

# Sets CLIENT_TLS for a run: the client certificate and the CA when $1 is tls.
client_tls_for() {
    CLIENT_TLS=()
    if [ "$1" = tls ]; then
        CLIENT_TLS=(--cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client-key.pem")
    fi
}

run_etcd() { # plain|tls
    local mode="$1" system=etcd scheme=http workloads="$WORKLOADS" tls_flags=() etcdctl_tls=()
    if [ "$mode" = tls ]; then
        system=etcd-tls scheme=https workloads="$TLS_WORKLOADS"
        # Clients and peers over TLS, certificates of the cluster CA required on both.
        tls_flags=(--cert-file "$CERTS/node.pem" --key-file "$CERTS/node-key.pem"
            --trusted-ca-file "$CERTS/ca.pem" --client-cert-auth
            --peer-cert-file "$CERTS/node.pem" --peer-key-file "$CERTS/node-key.pem"
            --peer-trusted-ca-file "$CERTS/ca.pem" --peer-client-cert-auth)
        etcdctl_tls=(--cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client-key.pem")
    fi
    client_tls_for "$mode"
    require_free_ports "${ETCD_CLIENT_PORTS[@]}" "${ETCD_PEER_PORTS[@]}"
    local cluster="" endpoints="" urls="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}m$((i + 1))=$scheme://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
        endpoints+="${endpoints:+,}127.0.0.1:${ETCD_CLIENT_PORTS[$i]}"
        urls+="${urls:+,}$scheme://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}"
    done
    runs+=("$system")
    load_before[$system]=$(loadavg)
    local member_pids=()
    server_pids=()
    for i in 0 1 2; do
        etcd --name "m$((i + 1))" --data-dir "$WORK/$system/m$((i + 1))" \
            --listen-client-urls "$scheme://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
            --advertise-client-urls "$scheme://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
            --listen-peer-urls "$scheme://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
            --initial-advertise-peer-urls "$scheme://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token cairn-bench --logger zap --log-level warn "${tls_flags[@]}" \
            >"$WORK/logs/$system-m$((i + 1)).log" 2>&1 &
        pids+=("$!")
        member_pids+=("$!")
        server_pids+=("$!")
    done
    wait_until 60 "$system to be healthy" env ETCDCTL_API=3 etcdctl --endpoints "$urls" \
        "${etcdctl_tls[@]}" endpoint health
    log "$system is up ($(etcd --version | head -1)): $urls"
    run_workloads "$system" etcd "$endpoints" "$workloads"
    for i in 0 1 2; do record_rss "$system" "member m$((i + 1))" "${member_pids[$i]}"; done
    load_after[$system]=$(loadavg)
    stop_all
    CLIENT_TLS=()
}

cairnctl() { "$BIN/cairnctl" --endpoints "$CAIRN_GATEWAY" "${CLIENT_TLS[@]}" "$@"; }

cairn_ready() {
    local shards status members leaders
    shards=$(cairnctl --output json cluster shards) || return 1
    [ "$(grep -o '"shard_id"' <<<"$shards" | wc -l)" -eq "$SHARDS" ] || return 1
    ! grep -Eq '"leader_node_id": ?0([^0-9]|$)' <<<"$shards" || return 1
    status=$(cairnctl --output json cluster status) || return 1
    grep -q '"under_replicated_shards": *0' <<<"$status" || return 1
    grep -q '"moves_in_flight": *0' <<<"$status" || return 1
    # Leaders spread over the nodes (the coordinator balances them), within one of each other.
    members=$(cairnctl --output json cluster members) || return 1
    leaders=$(grep -o '"leader_count": *[0-9]*' <<<"$members" | grep -o '[0-9]*$' | sort -n)
    [ "$(wc -l <<<"$leaders")" -eq 3 ] || return 1
    [ $(($(tail -1 <<<"$leaders") - $(head -1 <<<"$leaders"))) -le 1 ]
}

# The [tls] section of a Cairn process of role $2 as environment (CAIRN_TLS__*) in TLS_ENV,
# when $1 is tls: as scripts/local-cluster.sh --tls, client certificates required at the
# gateway. `env` execs the binary, so "$!" stays the process's own pid.
cairn_tls_env() { # plain|tls role
    TLS_ENV=()
    if [ "$1" = tls ]; then
        TLS_ENV=(CAIRN_TLS__CERT_FILE="$CERTS/$2.pem" CAIRN_TLS__KEY_FILE="$CERTS/$2-key.pem"
            CAIRN_TLS__CA_FILE="$CERTS/ca.pem" CAIRN_PUBLIC_TLS__CLIENT_AUTH=required)
    fi
}

run_cairn() { # plain|tls
    local mode="$1" system=cairn workloads="$WORKLOADS"
    if [ "$mode" = tls ]; then system=cairn-tls workloads="$TLS_WORKLOADS"; fi
    client_tls_for "$mode"
    require_free_ports 17000 17001 "${CAIRN_NODE_PORTS[@]}" 19000 19001 19101 19102 19103
    runs+=("$system")
    load_before[$system]=$(loadavg)
    local data="$WORK/$system" node_pids=() id
    mkdir -p "$data"
    cairn_tls_env "$mode" coordinator
    env "${TLS_ENV[@]}" "$BIN/cairn-coordinator" --member-id 1 --listen-address "$CAIRN_COORDINATOR" \
        --data-dir "$data/coordinator" --shard-count "$SHARDS" --replication-factor 3 \
        --metrics-listen-address 127.0.0.1:19001 >"$WORK/logs/$system-coordinator.log" 2>&1 &
    pids+=("$!")
    local coordinator_pid="$!"
    server_pids=("$coordinator_pid")
    cairn_tls_env "$mode" node
    for id in 1 2 3; do
        env CAIRN_LOG__FILTER=warn "${TLS_ENV[@]}" "$BIN/cairn-node" \
            --listen-address "127.0.0.1:${CAIRN_NODE_PORTS[$((id - 1))]}" \
            --data-dir "$data/node-$id" --coordinators "$CAIRN_COORDINATOR" \
            --labels "zone=bench-$id" --metrics-listen-address "127.0.0.1:1910$id" \
            >"$WORK/logs/$system-node-$id.log" 2>&1 &
        pids+=("$!")
        node_pids+=("$!")
        server_pids+=("$!")
    done
    cairn_tls_env "$mode" gateway
    env CAIRN_LOG__FILTER=warn CAIRN_WORKER_THREADS="$GATEWAY_THREADS" "${TLS_ENV[@]}" \
        "$BIN/cairn-gateway" --listen-address "$CAIRN_GATEWAY" \
        --coordinators "$CAIRN_COORDINATOR" --metrics-listen-address 127.0.0.1:19000 \
        >"$WORK/logs/$system-gateway.log" 2>&1 &
    pids+=("$!")
    local gateway_pid="$!"
    server_pids+=("$gateway_pid")
    if ! wait_until 120 "every Cairn shard to have 3 voters and balanced leaders" cairn_ready; then
        log "going on: leaders may still move during the first points"
    fi
    log "$system is up ($SHARDS shards, replication 3): gateway $CAIRN_GATEWAY"
    run_workloads "$system" cairn "$CAIRN_GATEWAY" "$workloads"
    for id in 1 2 3; do record_rss "$system" "node $id" "${node_pids[$((id - 1))]}"; done
    record_rss "$system" gateway "$gateway_pid"
    record_rss "$system" coordinator "$coordinator_pid"
    load_after[$system]=$(loadavg)
    stop_all
    CLIENT_TLS=()
}

for system in $SYSTEMS; do
    case "$system" in
    etcd)
        run_etcd plain
        if [ -n "$TLS_WORKLOADS" ]; then run_etcd tls; fi
        ;;
    cairn)
        run_cairn plain
        if [ -n "$TLS_WORKLOADS" ]; then run_cairn tls; fi
        ;;
    *)
        log "unknown system $system (etcd or cairn)"
        exit 2
        ;;
    esac
done

elapsed=$(($(date +%s) - started_at))
{
    echo "Generated by \`scripts/bench-compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') from commit" \
        "\`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- crates || echo ' (with uncommitted changes)'); the whole script took ${elapsed} s."
    echo
    echo "- **Machine**: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r); one disk; every process on loopback, clients on the same machine."
    echo "- **Load**: the machine is shared with other builds and tests. Load average (1, 5, 15 min) before/after: $(for s in "${runs[@]}"; do printf '%s %s → %s; ' "$s" "${load_before[$s]:-?}" "${load_after[$s]:-?}"; done)numbers taken under load are noisy; compare ratios from the same run."
    echo "- **etcd**: $(etcd --version | head -1 | sed 's/etcd Version: //') (Debian \`etcd-server\`), 3 members, default settings (fsync on every commit), one data folder each."
    echo "- **Cairn**: $PROFILE build; 1 coordinator, 3 storage nodes, 1 gateway; $SHARDS shards, replication 3, default settings (WAL fsync by group commit before every acknowledgement; linearizable reads by lease) except the gateway's \`worker_threads = $GATEWAY_THREADS\` (0: one per core)."
    echo "- **Workload** (\`cairn-bench\`): $RECORDS records loaded first, $KEY_SIZE-byte keys, $VALUE_SIZE-byte values, $DISTRIBUTION key choice; each point runs ${WARMUP} s of warm-up, then ${DURATION} s measured; N clients with one request in flight each, over min(N, $CONNECTIONS_MAX) connections (etcd: connection i to member i mod 3; Cairn: every connection to the gateway). Reads are linearizable on both (etcd's default Range, ReadIndex; Cairn's default Get, by the shard leader's lease, D26). The same binary and code path measures both; only the \`KvTarget\` differs (\`etcd-client\` crate, Cairn SDK)."
    if [[ " $WORKLOADS " == *" T "* ]]; then
        echo "- **Workload T** (cross-shard transactions): each operation picks two records on different shards of the $SHARDS-shard Cairn cluster (Cairn's jump hash of the key), reads both (linearizable), then writes both in one transaction comparing their mod revisions with the ones read, as etcd's STM does; when a comparison failed (or Cairn answered Conflict) it reads again and retries, at most 16 runs. An operation is one committed transaction, its reads and retries included. etcd runs the same pairs through the same code. Failures are counted by kind (below the table): a Cairn gateway without cross-shard transactions refuses every one (\`cross_shard_txn\`)."
    fi
    if [ -n "$TLS_WORKLOADS" ]; then
        echo "- **TLS run** (systems \`etcd-tls\`, \`cairn-tls\`; table *TLS cost* below): after its plaintext points, each system is started again from empty data folders with TLS on every connection, loaded over TLS, and runs workloads $TLS_WORKLOADS at the same concurrencies. Certificates: one throw-away CA and ECDSA P-256 leaves from \`cairnctl dev certs\`. Cairn: mutual TLS between all its processes (gateway → node, node ↔ node Raft, node and gateway → coordinator; roles by certificate) and client certificates required at the gateway (\`public_tls.client_auth = required\`), as \`scripts/local-cluster.sh --tls\`. etcd: client and peer URLs over https with \`--client-cert-auth\` and \`--peer-client-cert-auth\`. \`cairn-bench\` presents a client certificate to both through the same rustls (ring) connector; its connections open during the warm-up, so handshakes are outside the measured seconds: what the table shows is the cost of encrypting and authenticating every message on every hop."
    fi
    echo
    echo "Peak resident memory (VmHWM, after every point of the system ran):"
    echo
    echo "| system | process | peak RSS MiB |"
    echo "|---|---|--:|"
    cat "$RSS"
    echo
    echo "CPU time per operation (user + system, warm-up included and spread over all operations; the machine has $(nproc) cores, so it serves at most $(nproc) × 10⁶ ÷ (servers + client µs/op) operations per second):"
    echo
    echo "| system | workload | clients | servers µs/op | client µs/op |"
    echo "|---|---|--:|--:|--:|"
    cat "$CPU"
} >"$META"

mkdir -p "$OUT"
"$BIN/cairn-bench-report" --results "$WORK/results" --meta "$META" --readme "$OUT/README.md" \
    --csv "$OUT/cairn-vs-etcd.csv" --png-link cairn-vs-etcd.png \
    --plot-data "$WORK/plot.dat" --gnuplot "$WORK/plot.gp" --png "$OUT/cairn-vs-etcd.png"
gnuplot "$WORK/plot.gp"
log "done in ${elapsed} s: $OUT/README.md, $OUT/cairn-vs-etcd.csv, $OUT/cairn-vs-etcd.png (raw results in $WORK/results)"
