#!/usr/bin/env python3
"""The `bulwark bench` transfer workload against a 3-member etcd cluster (driven by bench/etcd.sh).

Keys: `a/<id>` holds an account as JSON (ledger, code, debits_posted, credits_posted), `t/<id>` a
transfer as JSON. etcd has no arithmetic inside a transaction, so a transfer is done the way
etcd's own STM (clientv3/concurrency) does it, optimistic concurrency in two round trips:

1. read: one read-only, linearizable txn ranging over the accounts of the batch (served by the
   leader through ReadIndex, no disk write);
2. write: one txn whose compares are `mod_revision(a/<debit>) == seen`, `mod_revision(a/<credit>)
   == seen` for every account and `create_revision(t/<id>) == 0` for every transfer (the id is
   new: idempotency), whose success branch puts every account's new balances and every transfer
   record, and whose failure branch ranges over the same keys, so a conflict is retried at once
   from what it returned, without another read. A transfer id that turns out to exist counts as
   `exists` and is not applied again.

With `--batch 1` (the default) one transfer is one write txn: 2 compares + 1 create check, 3 puts.
With `--batch B` one txn carries B transfers (compares on every distinct account of the batch,
so etcd must run with `--max-txn-ops` above 3B; etcd.sh raises it): a batch conflicts with every
concurrent batch that shares an account, so with 8 clients and 10 000 accounts large batches
mostly retry; see bench/README.md.

Clients are processes (not threads: the GIL would make the driver the bottleneck), each on its
own keep-alive HTTP connection to etcd's JSON gateway (`POST /v3/kv/txn`), by default to the
leader (like `bulwark bench --addr <leader>`). Latency is per transfer (per batch with --batch),
from the read until the write txn succeeded, retries included.
"""

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import time
import urllib.parse


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s)


class EtcdError(Exception):
    pass


class Etcd:
    """One keep-alive connection to one member's JSON gateway."""

    def __init__(self, url, timeout=30.0):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def call(self, path, body):
        data = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                raw = r.read()
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise EtcdError(f"{type(e).__name__}: {e}") from e
                continue
            if r.status != 200:
                raise EtcdError(f"HTTP {r.status}: {raw[:200].decode(errors='replace')}")
            return json.loads(raw)

    def txn(self, compare=(), success=(), failure=()):
        body = {}
        if compare:
            body["compare"] = list(compare)
        if success:
            body["success"] = list(success)
        if failure:
            body["failure"] = list(failure)
        return self.call("/v3/kv/txn", body)


def akey(i):
    return f"a/{i:010d}"


def tkey(i):
    return f"t/{i:020d}"


def rng_op(key):
    return {"request_range": {"key": b64(key)}}


def put_op(key, value):
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def ranged(responses):
    """key -> (value bytes, mod_revision) of every range response (absent keys left out)."""
    out = {}
    for r in responses:
        for kv in r.get("response_range", {}).get("kvs", []):
            out[unb64(kv["key"]).decode()] = (unb64(kv["value"]), int(kv["mod_revision"]))
    return out


def find_leader(endpoints):
    for url in endpoints:
        try:
            s = Etcd(url, timeout=5).call("/v3/maintenance/status", {})
        except EtcdError:
            continue
        if s.get("leader") and s.get("leader") == s.get("header", {}).get("member_id"):
            return url
    return None


def create_accounts(etcd, accounts, ledger, chunk):
    for first in range(1, accounts + 1, chunk):
        ops = []
        for i in range(first, min(first + chunk, accounts + 1)):
            acc = {"id": i, "ledger": ledger, "code": 1, "debits_posted": 0, "credits_posted": 0}
            ops.append(put_op(akey(i), json.dumps(acc, separators=(",", ":"))))
        etcd.txn(success=ops)


def client(c, args, url, start_at, out):
    etcd = Etcd(url)
    rng = random.Random(c * 7919 + 1)
    # Ids unique per client and per run: no shared counter needed.
    next_id = (int(time.time()) % 100_000) * 10**12 + c * 10**10
    lat, counts, failures = [], {"transfers": 0, "exists": 0, "failed": 0, "retries": 0,
                                  "txns": 0, "reads": 0, "amount": 0}, {}
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.perf_counter() + args.duration
    while time.perf_counter() < deadline:
        batch = []
        for _ in range(args.batch):
            d = rng.randrange(args.accounts) + 1
            cr = rng.randrange(args.accounts) + 1
            while cr == d:
                cr = rng.randrange(args.accounts) + 1
            next_id += 1
            batch.append((next_id, d, cr, rng.randint(1, 1000)))
        accounts = sorted({a for t in batch for a in (t[1], t[2])})
        t0 = time.perf_counter()
        try:
            # 1. read the balances (linearizable).
            seen = ranged(etcd.txn(success=[rng_op(akey(a)) for a in accounts])["responses"])
            counts["txns"] += 1
            counts["reads"] += 1
            if len(seen) != len(accounts):
                raise EtcdError("account_not_found")
            while True:
                # 2. write, if nothing changed since the read and every id is new.
                state = {a: json.loads(seen[akey(a)][0]) for a in accounts}
                ts = time.time_ns()
                puts = []
                for (tid, d, cr, amount) in batch:
                    state[d]["debits_posted"] += amount
                    state[cr]["credits_posted"] += amount
                    rec = {"id": tid, "debit_account_id": d, "credit_account_id": cr,
                           "amount": amount, "ledger": args.ledger, "code": 1, "timestamp": ts}
                    puts.append(put_op(tkey(tid), json.dumps(rec, separators=(",", ":"))))
                compare = [{"key": b64(akey(a)), "target": "MOD", "result": "EQUAL",
                            "mod_revision": str(seen[akey(a)][1])} for a in accounts]
                compare += [{"key": b64(tkey(t[0])), "target": "CREATE", "result": "EQUAL",
                             "create_revision": "0"} for t in batch]
                puts += [put_op(akey(a), json.dumps(state[a], separators=(",", ":")))
                         for a in accounts]
                reads = [rng_op(akey(a)) for a in accounts] + [rng_op(tkey(t[0])) for t in batch]
                r = etcd.txn(compare, puts, reads)
                counts["txns"] += 1
                if r.get("succeeded"):
                    break
                counts["retries"] += 1
                seen = ranged(r.get("responses", []))
                existing = [t for t in batch if tkey(t[0]) in seen]
                if existing:
                    counts["exists"] += len(existing)
                    batch = [t for t in batch if tkey(t[0]) not in seen]
                    accounts = sorted({a for t in batch for a in (t[1], t[2])})
                    if not batch:
                        break
        except (EtcdError, KeyError, ValueError) as e:
            counts["failed"] += 1
            key = f"failed: {str(e).splitlines()[0][:120]}"
            failures[key] = failures.get(key, 0) + 1
            time.sleep(0.1)
            continue
        lat.append(time.perf_counter() - t0)
        counts["transfers"] += len(batch)
        counts["amount"] += sum(t[3] for t in batch)
    out.put((lat, counts, failures))


def verify(etcd, acknowledged):
    """Whether all debits equal all credits equal the amounts of the acknowledged transfers."""
    r = etcd.call("/v3/kv/range", {"key": b64("a/"), "range_end": b64("a0")})
    debits = credits = 0
    for kv in r.get("kvs", []):
        acc = json.loads(unb64(kv["value"]))
        debits += acc["debits_posted"]
        credits += acc["credits_posted"]
    return debits == credits == acknowledged


def fsync_stats(endpoints):
    """(WAL fsyncs, their total seconds) summed over the members, from /metrics."""
    count = total = 0.0
    for url in endpoints:
        u = urllib.parse.urlparse(url)
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
        except (OSError, http.client.HTTPException):
            return None
        for line in text.splitlines():
            if line.startswith("etcd_disk_wal_fsync_duration_seconds_count"):
                count += float(line.split()[-1])
            elif line.startswith("etcd_disk_wal_fsync_duration_seconds_sum"):
                total += float(line.split()[-1])
    return count, total


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rfind(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoints", required=True, help="comma-separated client URLs")
    p.add_argument("--target", choices=["leader", "all"], default="leader",
                   help="send to the leader only, or spread the clients over all members")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=1, help="transfers per write txn")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--ledger", type=int, default=1)
    p.add_argument("--setup-chunk", type=int, default=1000, help="accounts per setup txn")
    p.add_argument("--server-pids", default="", help="comma-separated etcd pids, for their CPU")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    endpoints = [e for e in args.endpoints.split(",") if e]
    leader = find_leader(endpoints)
    if leader is None:
        print("etcd_bench: no etcd member says it is the leader", file=sys.stderr)
        return 4
    create_accounts(Etcd(leader), args.accounts, args.ledger, args.setup_chunk)
    urls = [leader if args.target == "leader" else endpoints[c % len(endpoints)]
            for c in range(args.clients)]

    pids = [int(x) for x in args.server_pids.split(",") if x]
    out = mp.Queue()
    start_at = time.time() + 0.5
    procs = [mp.Process(target=client, args=(c, args, urls[c], start_at, out))
             for c in range(args.clients)]
    for pr in procs:
        pr.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = cpu_seconds(pids) if pids else None
    fsync0 = fsync_stats(endpoints)
    start = time.perf_counter()
    results = [out.get() for _ in procs]
    seconds = time.perf_counter() - start
    cpu1 = cpu_seconds(pids) if pids else None
    fsync1 = fsync_stats(endpoints)
    fsyncs = fsync_ms = None
    if fsync0 and fsync1 and fsync1[0] > fsync0[0]:
        fsyncs = (fsync1[0] - fsync0[0]) / seconds
        fsync_ms = (fsync1[1] - fsync0[1]) / (fsync1[0] - fsync0[0]) * 1000
    for pr in procs:
        pr.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    balanced = verify(Etcd(leader), sum(r[1]["amount"] for r in results))

    lat = sorted(x for r in results for x in r[0])
    total = {k: sum(r[1][k] for r in results) for k in results[0][1]}
    failures = {}
    for r in results:
        for k, v in r[2].items():
            failures[k] = failures.get(k, 0) + v
    q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1000, 3) if lat else 0.0
    client_cpu = (ru.ru_utime + ru.ru_stime) / seconds
    server_cpu = (cpu1 - cpu0) / seconds if cpu0 is not None and cpu1 is not None else None
    errors = total["exists"] + total["failed"] + (0 if balanced else 1)
    report = {
        "transfers": total["transfers"],
        "requests": len(lat),
        "txns": total["txns"],
        "seconds": round(seconds, 3),
        "transfers_per_sec": round(total["transfers"] / seconds, 3),
        "requests_per_sec": round(len(lat) / seconds, 3),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999),
                       "max": round(lat[-1] * 1000, 3) if lat else 0.0,
                       "mean": round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0},
        "errors": errors,
        "not_ok_results": total["exists"],
        "failed_requests": total["failed"],
        "conflict_retries": total["retries"],
        "balances_check": balanced,
        "wal_fsyncs_per_sec": round(fsyncs, 1) if fsyncs is not None else None,
        "wal_fsync_mean_ms": round(fsync_ms, 3) if fsync_ms is not None else None,
        "failures": failures,
        "client_cpu_cores": round(client_cpu, 3),
        "server_cpu_cores": round(server_cpu, 3) if server_cpu is not None else None,
        "config": {"accounts": args.accounts, "batch": args.batch, "concurrency": args.clients,
                   "duration": args.duration, "ledger": args.ledger, "target": args.target,
                   "endpoints": endpoints, "leader": leader},
    }
    if args.json:
        print(json.dumps(report))
    else:
        l = report["latency_ms"]
        unit = "transfer" if args.batch == 1 else "batch"
        print(f"etcd: {args.accounts} accounts, batch {args.batch}, concurrency {args.clients}, "
              f"read txn + write txn per {unit}, clients to {args.target} ({leader})")
        print(f"transfers      {report['transfers']}")
        print(f"seconds        {seconds:.2f}")
        print(f"transfers/s    {report['transfers_per_sec']:.0f}")
        print(f"requests       {report['requests']} ({report['requests_per_sec']:.1f}/s), "
              f"{total['txns']} txns")
        print(f"latency ms     p50 {l['p50']:.3f}  p99 {l['p99']:.3f}  p999 {l['p999']:.3f}  "
              f"max {l['max']:.3f}  (mean {l['mean']:.3f}, per {unit})")
        print(f"errors         {errors} ({total['exists']} results not ok, "
              f"{total['failed']} failed requests, {total['retries']} conflict retries)")
        for k, v in failures.items():
            print(f"  {v:>10}  {k}")
        print(f"balances       {'ok' if balanced else 'WRONG'} (debits = credits = the amounts "
              f"acknowledged)")
        if fsyncs is not None:
            print(f"wal fsyncs     {fsyncs:.0f}/s over the 3 members, mean {fsync_ms:.2f} ms "
                  f"({(total['txns'] - total['reads']) / seconds / max(fsyncs / 3, 1e-9):.1f} "
                  f"write txns per fsync of a member)")
        cpu = f"cpu            bench client {client_cpu:.2f} cores"
        if server_cpu is not None:
            cpu += f", etcd (3 members) {server_cpu:.2f} cores"
        print(cpu)
    return 0 if errors == 0 and total["transfers"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
