#!/usr/bin/env bash
# The `bulwark bench` transfer workload against a 3-member etcd cluster, for comparison with a
# 3-node Bulwark cluster (Raft on both sides, every write fsynced on a majority).
#
# Starts three etcd members on loopback, each on its own temporary data directory (etcd's
# defaults: every Raft log append fsynced), then runs bench/etcd_bench.py: ACCOUNTS accounts,
# CLIENTS concurrent client processes, each transfer one etcd transaction (a linearizable read
# of both balances, then one txn that checks the transfer id is new and the balances unchanged
# and writes both balances + the transfer record), for DURATION seconds. Prints transfers/s and
# latency, stops the members and removes their directories.
#
#   bench/etcd.sh                          # 60 s, 10000 accounts, batch 1, 8 clients
#   DURATION=10 bench/etcd.sh --json       # shorter; arguments go to etcd_bench.py
#   BATCH=100 CLIENTS=1 bench/etcd.sh      # B transfers per txn (see bench/README.md)
#
# Environment: DURATION (60), ACCOUNTS (10000), BATCH (1), CLIENTS (8), ETCDBENCH_DIR (where
# the members live; default a new directory under ${TMPDIR:-/tmp}), MAX_TXN_OPS (20000: etcd's
# default of 128 operations per txn is raised so that setup and --batch can use big txns).
# Installs Debian's etcd-server and etcd-client (apt) if etcd is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
DURATION="${DURATION:-60}"
ACCOUNTS="${ACCOUNTS:-10000}"
BATCH="${BATCH:-1}"
CLIENTS="${CLIENTS:-8}"
MAX_TXN_OPS="${MAX_TXN_OPS:-20000}"

if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd.sh: installing etcd" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "etcd.sh: etcd is missing; run as root or install it (apt-get install etcd-server etcd-client)" >&2
        exit 2
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >&2
fi

dir="${ETCDBENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bulwark-etcdbench.XXXXXX")}"
mkdir -p "$dir"

# Six free loopback ports: client and peer for each member.
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"

cluster=""
endpoints=""
for i in 1 2 3; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${ports[$((2 * i - 1))]}"
    endpoints+="${endpoints:+,}http://127.0.0.1:${ports[$((2 * i - 2))]}"
done

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for i in 1 2 3; do
    client_port="${ports[$((2 * i - 2))]}"
    peer_port="${ports[$((2 * i - 1))]}"
    # Durability is etcd's default (the WAL is fsynced before a member acknowledges an append;
    # there is no option to turn that off in 3.4). The backend quota is raised so that a long
    # run cannot hit etcd's 2 GiB default and turn the cluster read-only.
    etcd --name "e$i" --data-dir "$dir/e$i" \
        --listen-client-urls "http://127.0.0.1:$client_port" \
        --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token bulwark-etcdbench \
        --max-txn-ops "$MAX_TXN_OPS" --max-request-bytes 33554432 \
        --quota-backend-bytes 8589934592 \
        --logger zap --log-outputs "$dir/e$i.log" \
        >/dev/null 2>&1 &
    pids+=("$!")
done

for _ in $(seq 1 200); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
if ! ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
    echo "etcd.sh: the cluster did not become healthy; logs in $dir:" >&2
    tail -n 5 "$dir"/e*.log >&2 || true
    exit 5
fi
echo "etcd.sh: $(etcd --version | head -n 1) x3 on $endpoints, data in $dir (pids ${pids[*]})" >&2

pidlist="$(IFS=,; echo "${pids[*]}")"
python3 "$here/etcd_bench.py" \
    --endpoints "$endpoints" \
    --accounts "$ACCOUNTS" --batch "$BATCH" --clients "$CLIENTS" --duration "$DURATION" \
    --server-pids "$pidlist" "$@"
