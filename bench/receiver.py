"""Receiver bench: acks/s, latency and CPU per ack, ours against a minimal durable receiver and stripe-sync-engine.

    python -m bench.receiver [--quick] [--rounds N] [--seconds S] [--concurrency 1,8,32]

Five servers, each on a fresh database:
- ours: the Procfile's `web` line as it is;
- minimal: the same command with bench.minimal_app in its place, a receiver
  with the same guarantees in the fewest steps (verify_header + json.loads,
  one INSERT ... ON CONFLICT DO NOTHING in autocommit, one Dramatiq send);
- baseline: the same command with bench.baseline_app, the in-request handler
  Stripe's documentation shows (construct_event, then the insert);
- floor: the same command with bench.floor_app, an empty handler: what the
  server costs before any work;
- stripe-sync-engine (bench/peer): its processWebhook inside the request,
  which verifies and applies the event (ack and apply together), on node.
  Skipped, with the reason printed, where node or npm is missing.

The load driver posts real Stripe events (2 to 6 KB) with unique ids and a
valid signature over keep-alive connections that one thread drives
together, built and signed before each phase (bench/webhook_load.py); its
own CPU per request is shown beside the servers', since it takes from the
same 2 cores. Phases alternate between
the servers (the order flips each round) and the tables show the median of
the rounds: the machine is shared and noisy. CPU per ack is the server's
process tree plus PostgreSQL (its database's backends and the shared
auxiliary processes) plus the Redis server (none for stripe-sync-engine),
read from /proc. Other runs on the same PostgreSQL and Redis add to the last
two (Redis has no per-namespace CPU): the baseline's Redis column, which
should be 0, shows how much.
Afterwards every acked event id is looked up in each server's database (and
in its queue, for those that queue); for stripe-sync-engine, which keeps
objects rather than events, the objects of the acked events in its tables.

The fixture events share a few objects and one `created`: after the first
delivery for an object, stripe-sync-engine's upserts find their row already
synced at that time and change nothing (its cheapest path); the end-to-end
bench (bench/e2e.py) sends real lifecycles instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import common, peer
from bench.webhook_load import Phase, build_batch, drive, event_templates

# Requests built per phase: it ends at its duration, or when a thread has sent all of its share.
MAX_RATE = 4000
CONCURRENCY = (1, 8, 32)
TARGET_VS_PEER = 1.5  # ours acks/s at the top concurrency over stripe-sync-engine's
TARGET_VS_MINIMAL = 1.3  # ours acks/s at the top concurrency over the minimal durable receiver's
TARGET_P99_VS_MINIMAL = 1.0  # ours p99 at concurrency 1 over the minimal durable receiver's
PEER = "stripe-sync-engine"
# name -> the app in place of the Procfile's, for the servers run like ours.
# App factories the Procfile's web line serves (`python -m webhooks.serve MODULE:FACTORY`).
WEB_APPS = {
    "ours": "webhooks:create_app",
    "minimal": "bench.minimal_app:create_app",
    "baseline": "bench.baseline_app:create_app",
    "floor": "bench.floor_app:create_app",
}
QUEUES = ("ours", "minimal")  # the servers that queue what they store
STORES_EVENTS = ("ours", "minimal", "baseline")


# --- the servers ----------------------------------------------------------------------------


def procfile_web() -> list[str]:
    for line in (common.ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            return shlex.split(command)
    msg = "the Procfile has no web process"
    raise SystemExit(msg)


def web_command(app_spec: str) -> list[str]:
    """The Procfile's web line serving `app_spec` (the launcher takes the factory as its argument)."""
    argv = procfile_web()
    return [str(common.BIN / argv[0]), *argv[1:], app_spec]


@dataclass
class Server:
    name: str
    database_url: str
    port: int
    log: Path
    meters: dict[str, common.CpuMeter] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    peer: peer.Peer | None = None


@contextmanager
def serve(name: str, app_spec: str, workdir: Path) -> Iterator[Server]:
    """The Procfile's web line serving `app_spec` on a database of its own."""
    port = common.free_port()
    with common.bench_database(f"recv_{name}") as url:
        env = common.bench_env(url, PORT=str(port))
        log = workdir / f"{name}.log"
        proc = common.start(web_command(app_spec), env, log=log)
        server = Server(name, url, port, log, env=env)
        server.meters = {
            "server": common.CpuMeter(lambda: common.process_tree(proc.pid)),
            "postgres": common.CpuMeter(lambda: common.postgres_pids(url)),
            "redis": common.CpuMeter(lambda: common.redis_pids(env["REDIS_URL"])),
        }
        try:
            if not common.wait_until(lambda: accepting(port) or proc.poll() is not None, timeout=30):
                msg = f"{name}: the web server did not listen on {port} (log: {log})"
                raise SystemExit(msg)
            if proc.poll() is not None:
                msg = f"{name}: the web server exited with {proc.returncode} (log: {log})"
                raise SystemExit(msg)
            yield server
        finally:
            common.stop(proc)
            clear_queue(env)


@contextmanager
def serve_peer(workdir: Path, templates: Sequence[str]) -> Iterator[Server]:
    events = workdir / "templates.jsonl"
    events.write_text("".join(json.dumps(json.loads(t)) + "\n" for t in templates))
    with peer.serve(workdir, events, name="peer") as p:
        server = Server(PEER, p.database_url, p.port, p.log, peer=p)
        server.meters = {
            "server": common.CpuMeter(p.pids),
            "postgres": common.CpuMeter(lambda: common.postgres_pids(p.database_url)),
            "redis": common.CpuMeter(list),  # it uses no Redis
        }
        yield server


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def clear_queue(env: dict[str, str]) -> int:
    """Delete the namespace's keys (nothing consumes them here); returns how many ids were queued."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    namespace = env["QUEUE_NAMESPACE"]
    queued = int(client.llen(f"{namespace}:stripe_events"))
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    return queued


def queued(server: Server) -> set[str]:
    """The event ids in the messages waiting in the server's queue (ours carry several ids, the minimal one)."""
    client = redis.Redis.from_url(server.env["REDIS_URL"])
    bodies = client.hvals(f"{server.env['QUEUE_NAMESPACE']}:stripe_events.msgs")
    ids: set[str] = set()
    for body in bodies:
        (first, *_) = json.loads(body)["args"]
        ids.update(first if isinstance(first, list) else [first])
    return ids


def stored(server: Server, ids: Sequence[str]) -> int:
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM stripe_events WHERE id = ANY(%s)", (list(ids),)).fetchone()
    return int(row[0]) if row else 0


def to_queue(server: Server, ids: Sequence[str]) -> set[str]:
    """Those of `ids` a worker is to apply: ours stores a type it does not apply as ignored, unqueued."""
    with psycopg.connect(server.database_url) as conn:
        rows = conn.execute(
            "SELECT id FROM stripe_events WHERE id = ANY(%s) AND status <> 'ignored'", (list(ids),)
        ).fetchall()
    return {r[0] for r in rows}


# --- one measured phase ---------------------------------------------------------------------


@dataclass
class Reading:
    server: str
    concurrency: int
    acks_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms: dict[str, float]  # per ack: server, postgres, redis
    errors: int
    driver_ms: float = 0.0  # the load driver's CPU per request

    @property
    def cpu_ms_per_ack(self) -> float:
        return sum(self.cpu_ms.values())


def measure(server: Server, templates: Sequence[str], concurrency: int, seconds: float, tag: str) -> Phase:
    batch = build_batch(templates, tag, int(MAX_RATE * seconds), concurrency, server.port)
    for meter in server.meters.values():
        meter.start()
    phase = drive(server.port, batch, seconds)
    phase.cpu = {name: meter.stop() for name, meter in server.meters.items()}
    return phase


def reading(server: Server, concurrency: int, phase: Phase) -> Reading:
    acks = max(phase.acks, 1)
    ms = [v * 1000 for v in phase.latencies]
    return Reading(
        server=server.name,
        concurrency=concurrency,
        acks_per_s=phase.acks / phase.elapsed,
        p50_ms=common.percentile(ms, 50),
        p95_ms=common.percentile(ms, 95),
        p99_ms=common.percentile(ms, 99),
        cpu_ms={name: seconds * 1000 / acks for name, seconds in phase.cpu.items()},
        errors=phase.errors,
        driver_ms=phase.driver_cpu * 1000 / max(phase.acks + phase.errors, 1),
    )


def medians(readings: Sequence[Reading]) -> Reading:
    first = readings[0]
    return Reading(
        server=first.server,
        concurrency=first.concurrency,
        acks_per_s=common.median([r.acks_per_s for r in readings]),
        p50_ms=common.median([r.p50_ms for r in readings]),
        p95_ms=common.median([r.p95_ms for r in readings]),
        p99_ms=common.median([r.p99_ms for r in readings]),
        cpu_ms={k: common.median([r.cpu_ms[k] for r in readings]) for k in first.cpu_ms},
        errors=sum(r.errors for r in readings),
        driver_ms=common.median([r.driver_ms for r in readings]),
    )


# --- the run --------------------------------------------------------------------------------


def run(rounds: int, seconds: float, concurrencies: Sequence[int], warmup: float, with_peer: bool) -> dict[str, Any]:
    templates = event_templates()
    run_id = uuid.uuid4().hex[:6]
    readings: dict[tuple[str, int], list[Reading]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-receiver-")))
        servers = [stack.enter_context(serve(name, app, workdir)) for name, app in WEB_APPS.items()]
        if with_peer:
            servers.append(stack.enter_context(serve_peer(workdir, templates)))
        acked: dict[str, list[str]] = {s.name: [] for s in servers}
        # Apps imported, caches and node's JIT warm, and every pool grown to what
        # the top concurrency asks of it, before anything is measured.
        for i, server in enumerate(servers):
            batch = build_batch(templates, f"{run_id}w{i}", int(MAX_RATE * warmup), max(concurrencies), server.port)
            phase = drive(server.port, batch, warmup)
            if phase.acks == 0:
                msg = f"{server.name} acked nothing in the warm-up (log: {server.log})"
                raise SystemExit(msg)
            acked[server.name].extend(phase.acked_ids)
        for rnd in range(rounds):
            for c in concurrencies:
                for server in servers if rnd % 2 == 0 else servers[::-1]:
                    tag = f"{run_id}{servers.index(server)}r{rnd}c{c}x"
                    phase = measure(server, templates, c, seconds, tag)
                    acked[server.name].extend(phase.acked_ids)
                    r = reading(server, c, phase)
                    readings.setdefault((server.name, c), []).append(r)
                    print(
                        f"round {rnd + 1} c={c:<2} {server.name:<18} {r.acks_per_s:7.0f} acks/s"
                        f"  p99 {r.p99_ms:6.2f} ms  cpu/ack {r.cpu_ms_per_ack:5.2f} ms  errors {r.errors}",
                        flush=True,
                    )
        checks = {s.name: check(s, acked[s.name], templates) for s in servers if s.name != "floor"}
    return {
        "readings": {key: medians(rs) for key, rs in readings.items()},
        "rounds": readings,
        "checks": checks,
    }


def check(server: Server, acked: Sequence[str], templates: Sequence[str]) -> dict[str, Any]:
    """What became of the acked events: stored (and queued), or for the peer its objects in its tables."""
    if server.peer is not None:
        found, expected = server.peer.present(peer.objects_of(templates))
        return {
            "acked": len(acked),
            "objects": found,
            "objects_expected": expected,
            "stripe_calls": server.peer.stripe_calls(),
        }
    result: dict[str, Any] = {"acked": len(acked), "stored": stored(server, acked)}
    if server.name in QUEUES:
        expected = to_queue(server, acked)
        # ours sends from a thread after the answer: give it a moment to catch up.
        common.wait_until(lambda: expected <= queued(server), timeout=10)
        result["to_queue"] = len(expected)
        result["queued"] = len(expected & queued(server))
    return result


# --- the report -----------------------------------------------------------------------------


def report(result: dict[str, Any], concurrencies: Sequence[int], args: argparse.Namespace, skipped: str) -> bool:
    table: dict[tuple[str, int], Reading] = result["readings"]
    names = [n for n in (*WEB_APPS, PEER) if (n, concurrencies[0]) in table]
    rows = []
    for c in concurrencies:
        floor = table[("floor", c)]
        for name in names:
            r = table[(name, c)]
            rows.append(
                [
                    c,
                    name,
                    f"{r.acks_per_s:.0f}",
                    f"{r.p50_ms:.2f} / {r.p95_ms:.2f} / {r.p99_ms:.2f}",
                    cpu_cell(r),
                    f"{r.cpu_ms_per_ack / floor.cpu_ms_per_ack:.2f}x",
                    f"{r.driver_ms:.2f}",
                    r.errors,
                ]
            )
    common.print_table(
        f"Receiver (median of {args.rounds} rounds, {args.seconds:g} s each)",
        [
            "concurrency",
            "server",
            "acks/s",
            "p50 / p95 / p99 ms",
            "CPU ms/ack (server + pg + redis)",
            "CPU / the floor's",
            "driver CPU ms/req",
            "errors",
        ],
        rows,
    )
    others = [n for n in ("minimal", PEER, "baseline") if n in names]
    common.print_table(
        "Ours against each, same run (ratio ours / theirs: acks/s higher is better, p99 and CPU lower is better)",
        ["concurrency", *(f"vs {n}: acks/s, p99, CPU" for n in others)],
        [
            [
                c,
                *(
                    " / ".join(
                        f"{a / b:.2f}x"
                        for a, b in (
                            (table[("ours", c)].acks_per_s, table[(n, c)].acks_per_s),
                            (table[("ours", c)].p99_ms, table[(n, c)].p99_ms),
                            (table[("ours", c)].cpu_ms_per_ack, table[(n, c)].cpu_ms_per_ack),
                        )
                    )
                    for n in others
                ),
            ]
            for c in concurrencies
        ],
    )
    checks = result["checks"]
    common.print_table(
        "Every acked event is stored",
        ["server", "acked (200)", "stored", "queued for a worker, of those it applies", "lost"],
        [
            [
                name,
                c["acked"],
                c["stored"],
                f"{c['queued']} of {c['to_queue']}" if "queued" in c else "n/a (does not queue)",
                c["acked"] - c["stored"],
            ]
            for name, c in checks.items()
            if name in STORES_EVENTS
        ],
    )
    lost = sum(c["acked"] - c["stored"] for name, c in checks.items() if name in STORES_EVENTS)
    unqueued = sum(c["to_queue"] - c["queued"] for name, c in checks.items() if name in QUEUES)
    missing_objects = 0
    if PEER in checks:
        c = checks[PEER]
        missing_objects = c["objects_expected"] - c["objects"]
        calls = ", ".join(f"{k} {v}" for k, v in sorted(c["stripe_calls"].items())) or "none"
        print(
            f"\n{PEER} {peer.version()} (applies in the request, keeps objects, not events): acked {c['acked']},"
            f" objects of the acked events in its tables {c['objects']} of {c['objects_expected']};"
            f" its calls to the Stripe stand-in: {calls}"
        )
    top, one = max(concurrencies), min(concurrencies)
    peer_reading = table.get((PEER, top))
    each: dict[tuple[str, int], list[Reading]] = result["rounds"]

    def per_round(figure: str, c: int, other: str) -> tuple[float, ...]:
        pairs = zip(each[("ours", c)], each.get((other, c), []), strict=False)
        return tuple(getattr(a, figure) / getattr(b, figure) for a, b in pairs if getattr(b, figure))

    ratios = [
        common.Ratio(
            f"acks/s at c={top}, ours / {PEER}",
            table[("ours", top)].acks_per_s,
            None if peer_reading is None else peer_reading.acks_per_s,
            TARGET_VS_PEER,
            ">=",
            per_round=per_round("acks_per_s", top, PEER),
        ),
        common.Ratio(
            f"acks/s at c={top}, ours / minimal durable receiver",
            table[("ours", top)].acks_per_s,
            table[("minimal", top)].acks_per_s,
            TARGET_VS_MINIMAL,
            ">=",
            per_round=per_round("acks_per_s", top, "minimal"),
        ),
        common.Ratio(
            f"p99 at c={one}, ours / minimal durable receiver",
            table[("ours", one)].p99_ms,
            table[("minimal", one)].p99_ms,
            TARGET_P99_VS_MINIMAL,
            "<=",
            " ms",
            per_round=per_round("p99_ms", one, "minimal"),
        ),
    ]
    met = common.print_ratios(ratios)
    intact = lost == 0 and unqueued <= 0 and missing_objects == 0
    print(
        f"\nEvery acked event stored{', queued' if QUEUES else ''} (and applied, for {PEER}):"
        f" {'yes' if intact else 'NO'} (lost {lost}, not queued {max(unqueued, 0)}, objects missing {missing_objects})"
    )
    if skipped:
        print(f"\n{PEER} not measured: {skipped}")
    path = common.record(
        "receiver",
        {
            "args": vars(args),
            "peer": {"package": peer.PACKAGE, "version": peer.version(), "skipped": skipped or None},
            "readings": [vars(r) | {"cpu_ms_per_ack": r.cpu_ms_per_ack} for r in table.values()],
            "checks": checks,
            "targets": [vars(r) | {"ratio": r.ratio, "met": r.met} for r in ratios],
            "intact": intact,
        },
    )
    print(f"\nrecorded in {path.relative_to(common.ROOT)}")
    return met and intact


def cpu_cell(r: Reading) -> str:
    parts = " + ".join(f"{r.cpu_ms[k]:.2f}" for k in ("server", "postgres", "redis"))
    return f"{r.cpu_ms_per_ack:.2f} ({parts})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one round of 1.5 s per phase (a smoke run)")
    # Several short rounds beat a few long ones on a shared machine: the median
    # drops the rounds another process disturbed.
    parser.add_argument("--rounds", type=int, default=5, help="rounds, alternating the servers (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per phase (default 3)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="default 1,8,32")
    parser.add_argument("--no-peer", action="store_true", help=f"do not measure {PEER}")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 1.5
    concurrencies = sorted({int(c) for c in args.concurrency.split(",")})
    skipped = "--no-peer" if args.no_peer else (peer.unavailable() or "")
    if skipped:
        print(f"{PEER} is not measured: {skipped}", flush=True)
    result = run(args.rounds, args.seconds, concurrencies, warmup=1.0 if args.quick else 3.0, with_peer=not skipped)
    return 0 if report(result, concurrencies, args, skipped) else 1


if __name__ == "__main__":
    raise SystemExit(main())
