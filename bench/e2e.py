"""End-to-end bench: a burst of signed events received and applied, ours against stripe-sync-engine.

    python -m bench.e2e [--events N] [--rounds R] [--concurrency C] [--seed S] [--quick] [--no-peer]

The same burst (bench.burst: mixed real lifecycles from the simulator, oldest
first) is signed and posted to each system over C keep-alive connections
(bench/webhook_load.py's driver, event n on connection n mod C):
- ours: the Procfile's `web` and `worker` lines on a fresh database and
  queue namespace, timed from the first post until no event is received,
  processing or failed (every one processed or ignored);
- stripe-sync-engine (bench/peer): it applies each event inside the
  request, so it is done when the last answer is in.
Before the clock starts each system takes a warm-up of fixture events and,
for ours, drains it. CPU per event counts every process that works for it,
read from /proc: ours = web + worker + PostgreSQL (its database's backends
and the shared auxiliary processes) + Redis; stripe-sync-engine = node +
PostgreSQL. Its stand-in for Stripe's API is reported beside it, not in it:
it stands for Stripe's servers. Rounds alternate the two (the order flips
each round), each on fresh databases; the tables show medians.

Afterwards each subscription's and invoice's stored status is compared with
the status in its last event of the burst, for both (the contract's
`subscriptions` and `invoices`, its `stripe.subscriptions` and
`stripe.invoices`). stripe-sync-engine skips an upsert whose event is not
newer, to the second, than the state it holds, so of several events for one
object in the same second the first applied wins: that work is not done, and
the state can stay behind. The table shows how often; it is not a target.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import burst, common, peer
from bench.pipeline import procfile_worker, status_counts, wait_drained
from bench.receiver import accepting, web_command
from bench.webhook_load import STRIPE_HEADERS, Batch, build_batch, drive, event_templates

OURS, PEER = "ours", "stripe-sync-engine"
TARGET_CPU_VS_PEER = 1.5  # ours end-to-end CPU ms/event over stripe-sync-engine's
WARMUP_EVENTS = 1000
# No phase runs this long: the driver's deadline is only a bound.
MAX_SECONDS = 3600.0


def signed_batch(bodies: Sequence[str], concurrency: int, port: int) -> Batch:
    """These event bodies as signed deliveries, event n on connection n mod `concurrency`."""
    stamp = str(int(time.time()))
    key = common.SECRET.encode()
    batch = Batch([[] for _ in range(concurrency)], [[] for _ in range(concurrency)])
    for n, text in enumerate(bodies):
        body = text.encode()
        signature = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{STRIPE_HEADERS}"
            f"Stripe-Signature: t={stamp},v1={signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        batch.requests[n % concurrency].append(head.encode() + body)
        batch.ids[n % concurrency].append(json.loads(text)["id"])
    return batch


# The tables both keep with Stripe's `status` verbatim, by Stripe object type.
STATE_TABLES = {"subscription": "subscriptions", "invoice": "invoices"}


def last_statuses(bodies: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each subscription's and invoice's status in its last event of the burst."""
    last: dict[str, dict[str, str]] = {kind: {} for kind in STATE_TABLES}
    for text in bodies:
        obj = json.loads(text)["data"]["object"]
        if obj.get("object") in last and isinstance(obj.get("status"), str):
            last[obj["object"]][obj["id"]] = obj["status"]
    return last


def final_state(url: str, schema: str, expected: dict[str, dict[str, str]]) -> dict[str, list[int]]:
    """Per object type: [objects whose stored status is their last event's, objects]."""
    found = {}
    with psycopg.connect(url) as conn:
        for kind, table in STATE_TABLES.items():
            rows = dict(conn.execute(f'SELECT id, status::text FROM "{schema}"."{table}"').fetchall())
            found[kind] = [sum(rows.get(i) == status for i, status in expected[kind].items()), len(expected[kind])]
    return found


def same_second(bodies: Sequence[str]) -> int:
    """Events whose object had an earlier event of the burst in the same second."""
    seen: set[tuple[str, int]] = set()
    repeats = 0
    for text in bodies:
        event = json.loads(text)
        key = (str(event["data"]["object"].get("id")), int(event["created"]))
        repeats += key in seen
        seen.add(key)
    return repeats


@dataclass
class Run:
    system: str
    events: int
    acked: int
    errors: int
    ack_s: float  # first post to last answer
    done_s: float  # first post to every event applied
    cpu_s: dict[str, float]
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_event(self) -> float:
        return sum(self.cpu_s.values()) * 1000 / self.events

    @property
    def events_per_s(self) -> float:
        return self.events / self.done_s if self.done_s else 0.0


# --- ours: web + worker ---------------------------------------------------------------------


@dataclass
class Ours:
    database_url: str
    port: int
    web: Any
    worker: Any
    env: dict[str, str]
    log_dir: Path


@contextmanager
def serve_ours(workdir: Path) -> Iterator[Ours]:
    worker_argv, variables = procfile_worker(None, None)
    port = common.free_port()
    with common.bench_database("e2e") as url:
        env = common.bench_env(url, PORT=str(port), **variables)
        web = common.start(web_command("webhooks:create_app"), env, log=workdir / "ours-web.log")
        worker = common.start(worker_argv, env, log=workdir / "ours-worker.log")
        try:
            if not common.wait_until(lambda: accepting(port) or web.poll() is not None, timeout=30):
                msg = f"ours: the web server did not listen on {port} (log: {workdir / 'ours-web.log'})"
                raise SystemExit(msg)
            for proc, what in ((web, "web"), (worker, "worker")):
                if proc.poll() is not None:
                    msg = f"ours: the {what} process exited with {proc.returncode} (log: {workdir}/ours-{what}.log)"
                    raise SystemExit(msg)
            yield Ours(url, port, web, worker, env, workdir)
        finally:
            common.stop(web)
            common.stop(worker)
            drop_namespace(env)


def drop_namespace(env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["REDIS_URL"])
    keys = list(client.scan_iter(f"{env['QUEUE_NAMESPACE']}*", count=1000))
    if keys:
        client.delete(*keys)


def drained(ours: Ours, conn: psycopg.Connection[Any], timeout: float) -> bool:
    alive = lambda: ours.web.poll() is None and ours.worker.poll() is None  # noqa: E731
    return wait_drained(conn, timeout=timeout, alive=alive)


def run_ours(workdir: Path, bodies: Sequence[str], templates: Sequence[str], concurrency: int, tag: str) -> Run:
    with serve_ours(workdir) as ours, psycopg.connect(ours.database_url, autocommit=True) as conn:
        warm = drive(ours.port, build_batch(templates, f"{tag}w", WARMUP_EVENTS, concurrency, ours.port), 60)
        if warm.acks == 0 or not drained(ours, conn, timeout=60):
            msg = f"ours did not take or apply the warm-up (logs: {workdir}/ours-*.log)"
            raise SystemExit(msg)
        batch = signed_batch(bodies, concurrency, ours.port)
        meters = {
            "web": common.CpuMeter(lambda: common.process_tree(ours.web.pid)),
            "worker": common.CpuMeter(lambda: common.process_tree(ours.worker.pid)),
            "postgres": common.CpuMeter(lambda: common.postgres_pids(ours.database_url)),
            "redis": common.CpuMeter(lambda: common.redis_pids(ours.env["REDIS_URL"])),
        }
        for meter in meters.values():
            meter.start()
        began = time.time()
        phase = drive(ours.port, batch, MAX_SECONDS)
        complete = drained(ours, conn, timeout=120 + len(bodies) / 20)
        cpu = {name: meter.stop() for name, meter in meters.items()}
        last = conn.execute("SELECT extract(epoch FROM max(processed_at)) FROM stripe_events").fetchone()
        done_s = (float(last[0]) - began) if last and last[0] is not None else time.time() - began
        outcome = {
            "drained": complete,
            "statuses": status_counts(conn),
            "state": final_state(ours.database_url, "public", last_statuses(bodies)),
        }
    return Run(OURS, len(bodies), phase.acks, phase.errors, phase.elapsed, max(done_s, phase.elapsed), cpu, outcome)


# --- stripe-sync-engine: ack and apply in the request ---------------------------------------


def run_peer(workdir: Path, bodies: Sequence[str], templates: Sequence[str], concurrency: int, tag: str) -> Run:
    events = workdir / "peer-events.jsonl"
    if not events.exists():  # its Stripe stand-in knows the warm-up's objects and the burst's
        with events.open("w") as f:
            for text in [*templates, *bodies]:
                f.write(json.dumps(json.loads(text)) + "\n")
    with peer.serve(workdir, events, name="peer-e2e") as p:
        warm = drive(p.port, build_batch(templates, f"{tag}w", WARMUP_EVENTS, concurrency, p.port), 60)
        if warm.acks == 0:
            msg = f"{PEER} acked nothing in the warm-up (log: {p.log})"
            raise SystemExit(msg)
        calls_before = p.stripe_calls()
        batch = signed_batch(bodies, concurrency, p.port)
        meters = {
            "node": common.CpuMeter(p.pids),
            "postgres": common.CpuMeter(lambda: common.postgres_pids(p.database_url)),
        }
        stub = common.CpuMeter(p.stub_pids)
        for meter in [*meters.values(), stub]:
            meter.start()
        phase = drive(p.port, batch, MAX_SECONDS)
        cpu = {name: meter.stop() for name, meter in meters.items()}
        stub_s = stub.stop()
        calls = {k: v - calls_before.get(k, 0) for k, v in p.stripe_calls().items() if v - calls_before.get(k, 0)}
        found, expected = p.present(peer.objects_of(bodies))
        outcome = {
            "rows": p.rows(),
            "objects": found,
            "objects_expected": expected,
            "stripe_calls": calls,
            "stub_cpu_ms_per_event": stub_s * 1000 / len(bodies),
            "state": final_state(p.database_url, "stripe", last_statuses(bodies)),
        }
    return Run(PEER, len(bodies), phase.acks, phase.errors, phase.elapsed, phase.elapsed, cpu, outcome)


# --- the run and the report -----------------------------------------------------------------


def run(n: int, seed: int, rounds: int, concurrency: int, with_peer: bool) -> dict[str, list[Run]]:
    bodies = burst.burst(n, seed)
    templates = event_templates()
    runs: dict[str, list[Run]] = {OURS: []}
    systems = [(OURS, run_ours)]
    if with_peer:
        runs[PEER] = []
        systems.append((PEER, run_peer))
    tag = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        for rnd in range(rounds):
            for name, runner in systems if rnd % 2 == 0 else systems[::-1]:
                r = runner(workdir, bodies, templates, concurrency, f"{tag}{rnd}")
                runs[name].append(r)
                print(
                    f"round {rnd + 1} {name:<18} {r.events_per_s:7.0f} events/s applied"
                    f"  acks {r.events / r.ack_s:6.0f}/s  CPU {r.cpu_ms_per_event:5.2f} ms/event"
                    f"  errors {r.errors}",
                    flush=True,
                )
    return runs


def summary(rs: Sequence[Run]) -> dict[str, Any]:
    return {
        "events_per_s": common.median([r.events_per_s for r in rs]),
        "acks_per_s": common.median([r.events / r.ack_s for r in rs]),
        "done_s": common.median([r.done_s for r in rs]),
        "cpu_ms_per_event": common.median([r.cpu_ms_per_event for r in rs]),
        "cpu_ms": {k: common.median([r.cpu_s[k] * 1000 / r.events for r in rs]) for k in rs[0].cpu_s},
        "errors": sum(r.errors for r in rs),
    }


def complete(r: Run) -> bool:
    if r.system == OURS:
        statuses = r.outcome["statuses"]
        finished = statuses.get("processed", 0) + statuses.get("ignored", 0)
        return r.outcome["drained"] and finished == sum(statuses.values()) and r.errors == 0
    return r.errors == 0 and r.acked == r.events and r.outcome["objects"] == r.outcome["objects_expected"]


def report(runs: dict[str, list[Run]], args: argparse.Namespace, skipped: str, repeats: int) -> bool:
    sums = {name: summary(rs) for name, rs in runs.items()}
    rows = []
    for name, s in sums.items():
        parts = " + ".join(f"{v:.2f}" for v in s["cpu_ms"].values())
        rows.append(
            [
                name,
                " + ".join(s["cpu_ms"]),
                f"{s['cpu_ms_per_event']:.2f} ({parts})",
                f"{s['events_per_s']:.0f}",
                f"{s['acks_per_s']:.0f}",
                f"{s['done_s']:.1f}",
                s["errors"],
            ]
        )
    common.print_table(
        f"End to end: {args.events} events received and applied, {args.concurrency} connections"
        f" (median of {args.rounds} rounds)",
        [
            "system",
            "processes counted",
            "CPU ms/event",
            "events/s applied (wall)",
            "acks/s",
            "first post to all applied (s)",
            "errors",
        ],
        rows,
    )
    outcome_rows = []
    for name, rs in runs.items():
        for r in rs:
            if name == OURS:
                st = r.outcome["statuses"]
                applied = (
                    f"processed {st.get('processed', 0)}, ignored {st.get('ignored', 0)}, failed {st.get('failed', 0)},"
                    f" unfinished {st.get('received', 0) + st.get('processing', 0)} (warm-up included)"
                )
                calls = "none"
            else:
                applied = (
                    f"acked {r.acked} of {r.events}; objects in its tables {r.outcome['objects']}"
                    f" of {r.outcome['objects_expected']}"
                )
                calls = ", ".join(f"{k} {v}" for k, v in sorted(r.outcome["stripe_calls"].items())) or "none"
                calls += f" (stand-in CPU {r.outcome['stub_cpu_ms_per_event']:.2f} ms/event, not counted)"
            state = r.outcome["state"]
            outcome_rows.append(
                [
                    name,
                    applied,
                    ", ".join(f"{STATE_TABLES[k]} {ok} of {n}" for k, (ok, n) in state.items()),
                    calls,
                    "yes" if complete(r) else "NO",
                ]
            )
    print(
        f"\nevents of the burst in the same second as an earlier event of their object: {repeats} of {args.events}"
        f" ({PEER} writes the row for one event of such a group; the others' upserts change nothing)"
    )
    common.print_table(
        "Outcome of each round",
        ["system", "applied", "status as the object's last event says", "calls to Stripe's API", "complete"],
        outcome_rows,
    )
    peer_cpu = sums[PEER]["cpu_ms_per_event"] if PEER in sums else None
    ratios = [
        common.Ratio(
            f"end-to-end CPU ms/event, ours / {PEER}",
            sums[OURS]["cpu_ms_per_event"],
            peer_cpu,
            TARGET_CPU_VS_PEER,
            "<=",
            per_round=tuple(
                a.cpu_ms_per_event / b.cpu_ms_per_event for a, b in zip(runs[OURS], runs.get(PEER, []), strict=False)
            ),
        )
    ]
    met = common.print_ratios(ratios)
    if PEER in sums:
        print(f"\nwall rate, ours / {PEER}: {sums[OURS]['events_per_s'] / sums[PEER]['events_per_s']:.2f}x (no target)")
    whole = all(complete(r) for rs in runs.values() for r in rs)
    print(f"\nEvery event applied in every round: {'yes' if whole else 'NO'}")
    if skipped:
        print(f"\n{PEER} not measured: {skipped}")
    path = common.record(
        "e2e",
        {
            "args": vars(args),
            "peer": {"package": peer.PACKAGE, "version": peer.version(), "skipped": skipped or None},
            "summary": sums,
            "runs": [vars(r) | {"cpu_ms_per_event": r.cpu_ms_per_event} for rs in runs.values() for r in rs],
            "targets": [vars(r) | {"ratio": r.ratio, "met": r.met} for r in ratios],
            "complete": whole,
            "same_second_events": repeats,
        },
    )
    print(f"\nrecorded in {path.relative_to(common.ROOT)}")
    return met and whole


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events in the burst (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the systems (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections posting the burst (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one round of 1,000 events (a smoke run)")
    parser.add_argument("--no-peer", action="store_true", help=f"do not measure {PEER}")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 1_000, 1
    skipped = "--no-peer" if args.no_peer else (peer.unavailable() or "")
    if skipped:
        print(f"{PEER} is not measured: {skipped}", flush=True)
    runs = run(args.events, args.seed, args.rounds, args.concurrency, with_peer=not skipped)
    return 0 if report(runs, args, skipped, same_second(burst.burst(args.events, args.seed))) else 1


if __name__ == "__main__":
    raise SystemExit(main())
