#!/usr/bin/env bash
# The `bulwark bench` workload against PostgreSQL, for a side-by-side comparison.
#
# Starts a throwaway PostgreSQL cluster on a temporary directory on loopback, with the same
# durability as Bulwark (fsync on, synchronous_commit on, full_page_writes on: a commit is on
# disk before the client hears of it), then runs bench/pg_bench.py: ACCOUNTS accounts, CLIENTS
# concurrent clients each sending batches of BATCH transfers, one transaction per batch, for
# DURATION seconds. Prints transfers/s and per-batch latency, and removes the cluster.
#
#   bench/postgres.sh                      # 60 s, 10000 accounts, batch 1000, 8 clients
#   DURATION=10 bench/postgres.sh --json   # shorter; arguments go to pg_bench.py
#
# Environment: DURATION (60), ACCOUNTS (10000), BATCH (1000), CLIENTS (8), PORT (a free one),
# PGBENCH_DIR (where the cluster lives; default a new directory under ${TMPDIR:-/tmp}),
# SHARED_BUFFERS (1GB), MAX_WAL_SIZE (4GB). Installs PostgreSQL (apt) and psycopg (pip) if missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
DURATION="${DURATION:-60}"
ACCOUNTS="${ACCOUNTS:-10000}"
BATCH="${BATCH:-1000}"
CLIENTS="${CLIENTS:-8}"
SHARED_BUFFERS="${SHARED_BUFFERS:-1GB}"
MAX_WAL_SIZE="${MAX_WAL_SIZE:-4GB}"

find_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bindir="$(find_bindir)"
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "postgres.sh: installing PostgreSQL" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "postgres.sh: PostgreSQL is missing; run as root or install it (apt-get install postgresql)" >&2
        exit 2
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bindir="$(find_bindir)"
fi
if ! python3 -c 'import psycopg' 2>/dev/null; then
    echo "postgres.sh: installing psycopg" >&2
    python3 -m pip install -q 'psycopg[binary]' >&2
fi

# PostgreSQL refuses to run as root: run the server as the `postgres` user then.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent postgres
    as_pg=(runuser -u postgres --)
fi

dir="${PGBENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bulwark-pgbench.XXXXXX")}"
mkdir -p "$dir"
[ "${#as_pg[@]}" -eq 0 ] || chown postgres "$dir"
if [ -z "${PORT:-}" ]; then
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi

cleanup() {
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
# Durability exactly as Bulwark's: every commit fsynced (group commit happens on its own with
# concurrent clients). The rest is ordinary tuning for a write-heavy load on a small machine.
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start -o "\
 -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$dir\
 -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c wal_sync_method=fdatasync\
 -c shared_buffers=$SHARED_BUFFERS -c max_wal_size=$MAX_WAL_SIZE -c wal_buffers=64MB\
 -c checkpoint_completion_target=0.9 -c max_connections=100" >/dev/null

postmaster="$(head -n 1 "$dir/data/postmaster.pid")"
echo "postgres.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data in $dir (pid $postmaster)" >&2

python3 "$here/pg_bench.py" \
    --dsn "host=127.0.0.1 port=$PORT user=postgres dbname=postgres" \
    --accounts "$ACCOUNTS" --batch "$BATCH" --clients "$CLIENTS" --duration "$DURATION" \
    --server-pid "$postmaster" "$@"
