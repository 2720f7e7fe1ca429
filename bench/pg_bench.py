#!/usr/bin/env python3
"""The `bulwark bench` workload against PostgreSQL (driven by bench/postgres.sh).

N accounts, then CLIENTS threads, each on its own connection, each sending batches of BATCH
random transfers (distinct debit/credit accounts, amount 1..=1000, unique ids). One batch is one
transaction: one call of post_transfers(), which inserts the transfers (the primary key makes a
retry idempotent: ON CONFLICT DO NOTHING) and adds their amounts to both accounts' balances.

The data is made on the client and sent as four bigint arrays (binary), so PostgreSQL, like
Bulwark, has to receive and decode every transfer. Latency is per batch (per request), from
sending the call until the commit is acknowledged.
"""

import argparse
import json
import os
import random
import resource
import sys
import threading
import time

import psycopg

SCHEMA = """
DROP TABLE IF EXISTS transfers;
DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (
    id              bigint PRIMARY KEY CHECK (id <> 0),
    ledger          integer NOT NULL,
    code            smallint NOT NULL,
    flags           integer NOT NULL DEFAULT 0,
    user_data       bigint NOT NULL DEFAULT 0,
    debits_pending  bigint NOT NULL DEFAULT 0,
    debits_posted   bigint NOT NULL DEFAULT 0,
    credits_pending bigint NOT NULL DEFAULT 0,
    credits_posted  bigint NOT NULL DEFAULT 0,
    ts              timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (fillfactor = 70);  -- room for HOT updates of the balances
CREATE TABLE transfers (
    id                bigint PRIMARY KEY CHECK (id <> 0),
    -- No foreign keys: post_transfers() checks that both accounts exist (and share the ledger)
    -- under its own row locks; a foreign key would only repeat that check and, taking KEY SHARE
    -- locks on rows other batches hold, turn them into MultiXacts (measured: much slower).
    debit_account_id  bigint NOT NULL,
    credit_account_id bigint NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    ledger            integer NOT NULL,
    code              smallint NOT NULL,
    user_data         bigint NOT NULL DEFAULT 0,
    ts                timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
-- An account's history, as GET /v1/accounts/{id}/transfers serves it (Bulwark keeps the same
-- per-account index for every transfer).
CREATE INDEX transfers_debit ON transfers (debit_account_id, ts);
CREATE INDEX transfers_credit ON transfers (credit_account_id, ts);

-- One batch of transfers, one transaction. Returns how many were new (the others existed).
CREATE OR REPLACE FUNCTION post_transfers(
    p_id bigint[], p_debit bigint[], p_credit bigint[], p_amount bigint[],
    p_ledger integer, p_code smallint
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    inserted integer;
    touched  integer;
    updated  integer;
BEGIN
    -- Lock every account of the batch in id order first, so that concurrent batches touching
    -- the same accounts queue instead of deadlocking.
    PERFORM 1 FROM accounts WHERE id = ANY (p_debit || p_credit) ORDER BY id FOR NO KEY UPDATE;
    WITH ins AS (
        INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, ledger, code, ts)
        SELECT u.id, u.debit, u.credit, u.amount, p_ledger, p_code, clock_timestamp()
        FROM unnest(p_id, p_debit, p_credit, p_amount) AS u (id, debit, credit, amount)
        ON CONFLICT (id) DO NOTHING
        RETURNING debit_account_id, credit_account_id, amount
    ), moves AS (
        SELECT debit_account_id AS account, amount AS debit, 0::bigint AS credit FROM ins
        UNION ALL
        SELECT credit_account_id, 0::bigint, amount FROM ins
    ), deltas AS (
        SELECT account, sum(debit)::bigint AS debit, sum(credit)::bigint AS credit
        FROM moves GROUP BY account
    ), upd AS (
        UPDATE accounts a
        SET debits_posted = a.debits_posted + d.debit,
            credits_posted = a.credits_posted + d.credit
        FROM deltas d
        WHERE a.id = d.account AND a.ledger = p_ledger
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM deltas), (SELECT count(*) FROM upd)
    INTO inserted, touched, updated;
    -- Every account of a new transfer must exist in the transfer's ledger, or nothing happens.
    IF updated <> touched THEN
        RAISE EXCEPTION 'account_not_found or accounts_must_have_the_same_ledger';
    END IF;
    RETURN inserted;
END
$$;
"""

POST = "SELECT post_transfers(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::integer, %b::smallint)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--ledger", type=int, default=1)
    p.add_argument("--server-pid", type=int, default=0, help="postmaster pid, to report its CPU")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for first in range(0, args.accounts, 8190):
            ids = list(range(first + 1, min(first + 8190, args.accounts) + 1))
            conn.execute(
                "INSERT INTO accounts (id, ledger, code) SELECT unnest(%b::bigint[]), %b, 1",
                (ids, args.ledger),
            )
        conn.execute("VACUUM ANALYZE accounts")

    conns = [psycopg.connect(args.dsn, autocommit=True) for _ in range(args.clients)]
    next_batch = iter(range(sys.maxsize))
    lock = threading.Lock()
    latencies = [[] for _ in conns]
    counts = [{"transfers": 0, "exists": 0, "failed": 0, "retries": 0} for _ in conns]
    failures = {}

    cpu0 = cpu_seconds(args.server_pid)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + args.duration

    def client(c):
        rng = random.Random(c * 7919 + 1)
        conn = conns[c]
        n_acc = args.accounts
        lat = latencies[c]
        cnt = counts[c]
        while time.perf_counter() < deadline:
            with lock:
                k = next(next_batch)
            first = k * args.batch
            ids = list(range(first + 1, first + args.batch + 1))
            debits, credits = [], []
            for _ in range(args.batch):
                d = rng.randrange(n_acc)
                cr = rng.randrange(n_acc)
                while cr == d:
                    cr = rng.randrange(n_acc)
                debits.append(d + 1)
                credits.append(cr + 1)
            amounts = [rng.randint(1, 1000) for _ in range(args.batch)]
            params = (ids, debits, credits, amounts, args.ledger, 1)
            while True:
                t0 = time.perf_counter()
                try:
                    inserted = conn.execute(POST, params).fetchone()[0]
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    cnt["retries"] += 1
                    continue
                except psycopg.Error as e:
                    cnt["failed"] += 1
                    with lock:
                        key = f"failed: {type(e).__name__}: {str(e).splitlines()[0]}"
                        failures[key] = failures.get(key, 0) + 1
                    break
                lat.append(time.perf_counter() - t0)
                cnt["transfers"] += args.batch
                cnt["exists"] += args.batch - inserted
                break

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    cpu1 = cpu_seconds(args.server_pid)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        conn.close()

    lat = sorted(x for l in latencies for x in l)
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1000, 3) if lat else 0.0
    client_cpu = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / seconds
    server_cpu = (cpu1 - cpu0) / seconds if cpu0 is not None and cpu1 is not None else None
    errors = total["exists"] + total["failed"]
    report = {
        "transfers": total["transfers"],
        "requests": len(lat),
        "seconds": round(seconds, 3),
        "transfers_per_sec": round(total["transfers"] / seconds, 3),
        "requests_per_sec": round(len(lat) / seconds, 3),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999),
                       "max": round(lat[-1] * 1000, 3) if lat else 0.0,
                       "mean": round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0},
        "errors": errors,
        "not_ok_results": total["exists"],
        "failed_requests": total["failed"],
        "deadlock_retries": total["retries"],
        "failures": failures,
        "client_cpu_cores": round(client_cpu, 3),
        "server_cpu_cores": round(server_cpu, 3) if server_cpu is not None else None,
        "config": {"accounts": args.accounts, "batch": args.batch, "concurrency": args.clients,
                   "duration": args.duration, "ledger": args.ledger},
    }
    if args.json:
        print(json.dumps(report))
    else:
        l = report["latency_ms"]
        print(f"postgres: {args.accounts} accounts, batch {args.batch}, "
              f"concurrency {args.clients}, one transaction per batch")
        print(f"transfers      {report['transfers']}")
        print(f"seconds        {seconds:.2f}")
        print(f"transfers/s    {report['transfers_per_sec']:.0f}")
        print(f"requests       {report['requests']} ({report['requests_per_sec']:.1f}/s)")
        print(f"latency ms     p50 {l['p50']:.3f}  p99 {l['p99']:.3f}  p999 {l['p999']:.3f}  "
              f"max {l['max']:.3f}  (mean {l['mean']:.3f}, per batch)")
        print(f"errors         {errors} ({total['exists']} results not ok, "
              f"{total['failed']} failed requests, {total['retries']} deadlock retries)")
        for k, v in failures.items():
            print(f"  {v:>10}  {k}")
        cpu = f"cpu            bench client {client_cpu:.2f} cores"
        if server_cpu is not None:
            cpu += f", postgres {server_cpu:.2f} cores"
        print(cpu)
    return 0 if errors == 0 and total["transfers"] > 0 else 1


def cpu_seconds(postmaster):
    """User + system CPU seconds of the postmaster and all its children (backends, walwriter,
    checkpointer ...), from /proc; None where that cannot be read."""
    if not postmaster:
        return None
    total = 0.0
    try:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(pid) == postmaster or int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None
    return total


if __name__ == "__main__":
    sys.exit(main())
