"""Web servers side by side: the empty-handler floor, our receiver under load, and deliveries beside slow clients.

    python -m bench.servers [--quick] [--rounds N] [--seconds S] [--slow-seconds S] [--candidates a,b,...]

Every candidate runs 2 worker processes (one per core) and, where the server
has threads, as many per process as the product's default WEB_THREADS:

  gunicorn-gthread  gunicorn as the product ran it before (bench/gunicorn.conf.py)
  gunicorn-gevent   the same settings with gevent's worker (1000 connections per process)
  granian           `python -m webhooks.serve`: granian's WSGI interface, as the Procfile runs it
  pyuwsgi           uWSGI from its wheel, HTTP/1.1 straight into the workers (--http11-socket)
  pyuwsgi-router    the same workers behind uWSGI's own HTTP router process (--http)

Three parts; in each round every candidate is measured once, the order
flipped every other round, and the tables show medians of the rounds (the
machine is shared and noisy):

1. Floor: bench/floor_app.py (an empty Flask handler) served by each, posted
   real Stripe events over keep-alive connections at concurrency 1, 8, 32
   (bench/webhook_load.py): acks/s and CPU ms per request of the server's
   process tree, read from /proc.
2. Receiver: `webhooks:create_app()` served by each on a bench database and
   a Redis namespace of its own, at concurrency 32: acks/s, latency and CPU
   ms per ack (server + PostgreSQL + Redis).
3. Slow clients, against that same receiver server: 200 idle connections
   (connected, sending nothing) and 16 that drip one byte a second into a
   request that never completes are held open (reopened whenever the server
   closes one) while 4 senders post valid signed deliveries, each on a fresh
   connection, one every 50 ms per sender, each given 5 s: p50, p99, max,
   failures and timeouts. The 16 drip into the headers (slowloris: the
   request line and a header that never ends) in one scenario and into the
   body (headers complete, Content-Length 4096, the body trickling) in
   another; a third scenario without slow clients is the reference.
Parts 2 and 3 start each candidate afresh in each round (one receiver
server at a time: PostgreSQL is shared, and each may hold 2 x 16
connections), on that candidate's database. Afterwards every acked event
id is looked up there.

The target: granian as the Procfile runs it delivers with a p99 under 1 s
in both slow-client scenarios. The exit status is 1 if it misses that or
an acked event is not stored.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import selectors
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import common, receiver
from bench.webhook_load import Batch, build_batch, drive, event_templates, post_once
from subsync import config

WORKERS = 2
# Every candidate with as many threads as the product's default, so that they
# meet the slow clients on equal terms; granian-4 shows what fewer cost.
THREADS = config.DEFAULT_WEB_THREADS
GUNICORN_CONF = common.ROOT / "bench" / "gunicorn.conf.py"
FLOOR_CONCURRENCY = (1, 8, 32)
LOAD_CONCURRENCY = 32
MAX_RATE = 4000  # requests built per second of a load phase
IDLE, DRIP = 200, 16
SENDERS, INTERVAL_S, TIMEOUT_S = 4, 0.05, 5.0
SETTLE_S = 2.0  # slow clients are open this long before the first delivery
SCENARIOS = ("none", "drip-head", "drip-body")
# The target: deliveries to the server the Procfile runs stay well inside
# Stripe's timeout while slow clients hold connections open.
TARGET_SERVER = "granian"
TARGET_P99_MS = 1000.0


# --- the candidates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    how: str
    argv: Callable[[str, int], list[str]]  # (factory "module:function", port) -> command line
    env: dict[str, str] = field(default_factory=dict)  # besides PORT, WEB_CONCURRENCY, WEB_THREADS


def _gunicorn(*extra: str) -> Callable[[str, int], list[str]]:
    return lambda app, _port: [str(common.BIN / "gunicorn"), "-c", str(GUNICORN_CONF), *extra, f"{app}()"]


def _uwsgi(*listen: str) -> Callable[[str, int], list[str]]:
    def argv(_app: str, port: int) -> list[str]:  # the app is named in the environment (bench/wsgi_entry.py)
        return [
            str(common.BIN / "uwsgi"),
            "--master",
            "--processes",
            str(WORKERS),
            "--threads",
            str(THREADS),
            "--lazy-apps",  # the app (its pool's threads) built in each worker, after the fork
            "--need-app",
            "--die-on-term",
            "--disable-logging",
            "--listen",
            "1024",
            "--pythonpath",
            str(common.ROOT),
            *(arg.format(port=port) for arg in listen),
            "--module",
            "bench.wsgi_entry:application",
        ]

    return argv


def _launcher(app: str, _port: int) -> list[str]:
    """The Procfile's web line, serving `app`."""
    return [str(common.BIN / "python"), "-m", "webhooks.serve", app]


CANDIDATES = (
    Candidate("gunicorn-gthread", f"gunicorn gthread, {THREADS} threads", _gunicorn()),
    Candidate(
        "gunicorn-gevent",
        "gunicorn gevent, 1000 connections",
        _gunicorn("--worker-class", "gevent", "--worker-connections", "1000"),
    ),
    Candidate("granian", f"granian WSGI, {THREADS} threads (the Procfile's)", _launcher),
    # Fewer threads than dripping bodies: each such body holds one until it is complete.
    Candidate("granian-4", "granian WSGI, 4 threads", _launcher, {"WEB_THREADS": "4"}),
    Candidate(
        "pyuwsgi",
        f"uWSGI, {THREADS} threads, --http11-socket",
        _uwsgi("--http11-socket", "127.0.0.1:{port}"),
    ),
    Candidate(
        "pyuwsgi-router",
        f"uWSGI, {THREADS} threads, behind --http",
        _uwsgi("--http", "127.0.0.1:{port}", "--http-keepalive"),
    ),
)


@contextmanager
def serve(candidate: Candidate, app: str, database_url: str, workdir: Path, kind: str) -> Iterator[receiver.Server]:
    """One candidate serving `app` (a factory) until the block ends; CPU meters as the receiver bench's."""
    port = common.free_port()
    settings = {"PORT": str(port), "WEB_CONCURRENCY": str(WORKERS), "WEB_THREADS": str(THREADS), "BENCH_WSGI_APP": app}
    env = common.bench_env(database_url, **(settings | candidate.env))
    log = workdir / f"{candidate.name}-{kind}.log"
    proc = common.start(candidate.argv(app, port), env, log=log)
    server = receiver.Server(candidate.name, database_url, port, log, env=env)
    server.meters = {"server": common.CpuMeter(lambda: common.process_tree(proc.pid))}
    if kind != "floor":  # the floor stores nothing
        server.meters["postgres"] = common.CpuMeter(lambda: common.postgres_pids(database_url))
        server.meters["redis"] = common.CpuMeter(lambda: common.redis_pids(env["REDIS_URL"]))
    try:
        if not common.wait_until(lambda: receiver.accepting(port) or proc.poll() is not None, timeout=60):
            msg = f"{candidate.name} did not listen on {port} (log: {log})"
            raise SystemExit(msg)
        if proc.poll() is not None:
            msg = f"{candidate.name} exited with {proc.returncode} (log: {log})"
            raise SystemExit(msg)
        yield server
    finally:
        common.stop(proc)
        receiver.clear_queue(env)


def warm(server: receiver.Server, templates: Sequence[str], tag: str, seconds: float) -> list[str]:
    phase = drive(server.port, build_batch(templates, tag, 2000, 8, server.port), seconds)
    if phase.acks == 0:
        msg = f"{server.name} acked nothing in the warm-up (log: {server.log})"
        raise SystemExit(msg)
    return phase.acked_ids


# --- slow clients ---------------------------------------------------------------------------


class SlowClients:
    """Idle and dripping connections held open against a server from one thread.

    A connection the server closes (or answers) is opened again at the next
    tick and counted in `shed`: a server that sheds slow clients is fine, as
    long as the real deliveries get through.
    """

    def __init__(self, port: int, idle: int, drip: int, into: str) -> None:
        self.port, self.idle, self.drip, self.into = port, idle, drip, into
        self.shed = 0
        self._selector = selectors.DefaultSelector()
        self._dripping: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def _start_line(self) -> bytes:
        head = f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if self.into == "head":
            return (head + "X-Slow: ").encode()
        return (
            head + "Content-Type: application/json\r\nStripe-Signature: t=1,v1=0\r\nContent-Length: 4096\r\n\r\n"
        ).encode()

    def _open(self, dripping: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if dripping:
            sock.sendall(self._start_line())
            self._dripping.append(sock)
        self._selector.register(sock, selectors.EVENT_READ, dripping)

    def _close(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        if sock in self._dripping:
            self._dripping.remove(sock)
        sock.close()

    def __enter__(self) -> SlowClients:
        for _ in range(self.idle):
            self._open(dripping=False)
        for _ in range(self.drip):
            self._open(dripping=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            self._close(key.fileobj)  # type: ignore[arg-type]
        self._selector.close()

    def _run(self) -> None:
        next_byte = time.monotonic() + 1.0
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                # Readable: the server answered (400, 408) or closed it.
                dripping = key.data
                self._close(key.fileobj)  # type: ignore[arg-type]
                self.shed += 1
                with contextlib.suppress(OSError):
                    self._open(dripping)
            if time.monotonic() >= next_byte:
                next_byte += 1.0
                for sock in list(self._dripping):
                    try:
                        sock.send(b"a")
                    except OSError:
                        self._close(sock)
                        self.shed += 1
                        with contextlib.suppress(OSError):
                            self._open(dripping=True)


# --- deliveries on fresh connections --------------------------------------------------------


@dataclass
class Deliveries:
    latencies: list[float] = field(default_factory=list)
    acked_ids: list[str] = field(default_factory=list)
    failures: int = 0  # answered with something else than 200, or the connection failed
    timeouts: int = 0  # no answer within TIMEOUT_S


def deliver(port: int, batch: Batch, seconds: float) -> Deliveries:
    """Each sender posts its requests one at a time, INTERVAL_S apart, until `seconds` pass."""
    results = [Deliveries() for _ in batch.requests]
    deadline = time.perf_counter() + seconds

    def run(i: int) -> None:
        out = results[i]
        for raw, event_id in zip(batch.requests[i], batch.ids[i], strict=True):
            began = time.perf_counter()
            if began >= deadline:
                break
            status = post_once(port, raw, TIMEOUT_S)
            elapsed = time.perf_counter() - began
            out.latencies.append(elapsed)
            if status == 200:
                out.acked_ids.append(event_id)
            elif elapsed >= TIMEOUT_S * 0.99:
                out.timeouts += 1
            else:
                out.failures += 1
            time.sleep(max(0.0, INTERVAL_S - elapsed))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(batch.requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Deliveries()
    for r in results:
        total.latencies.extend(r.latencies)
        total.acked_ids.extend(r.acked_ids)
        total.failures += r.failures
        total.timeouts += r.timeouts
    return total


@dataclass
class SlowReading:
    sent: int
    acked: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    failures: int
    timeouts: int
    shed: int


def slow_phase(server: receiver.Server, templates: Sequence[str], scenario: str, seconds: float, tag: str) -> tuple:
    count = SENDERS * (int(seconds / INTERVAL_S) + 2)
    batch = build_batch(templates, tag, count, SENDERS, server.port)
    idle, drip = (0, 0) if scenario == "none" else (IDLE, DRIP)
    into = "body" if scenario == "drip-body" else "head"
    with SlowClients(server.port, idle, drip, into) as slow:
        if idle or drip:
            time.sleep(SETTLE_S)
        result = deliver(server.port, batch, seconds)
        shed = slow.shed
    ms = [v * 1000 for v in result.latencies]
    reading = SlowReading(
        sent=len(ms),
        acked=len(result.acked_ids),
        p50_ms=common.percentile(ms, 50),
        p99_ms=common.percentile(ms, 99),
        max_ms=max(ms, default=float("nan")),
        failures=result.failures,
        timeouts=result.timeouts,
        shed=shed,
    )
    return reading, result.acked_ids


def slow_medians(readings: Sequence[SlowReading]) -> SlowReading:
    return SlowReading(
        sent=sum(r.sent for r in readings),
        acked=sum(r.acked for r in readings),
        p50_ms=common.median([r.p50_ms for r in readings]),
        p99_ms=common.median([r.p99_ms for r in readings]),
        max_ms=max(r.max_ms for r in readings),
        failures=sum(r.failures for r in readings),
        timeouts=sum(r.timeouts for r in readings),
        shed=sum(r.shed for r in readings),
    )


# --- the run --------------------------------------------------------------------------------


def in_turn(candidates: Sequence[Any], rnd: int) -> Sequence[Any]:
    return candidates if rnd % 2 == 0 else candidates[::-1]


def run(args: argparse.Namespace, candidates: Sequence[Candidate]) -> dict[str, Any]:
    templates = event_templates()
    run_id = uuid.uuid4().hex[:5]
    floor: dict[tuple[str, int], list[receiver.Reading]] = {}
    load: dict[str, list[receiver.Reading]] = {}
    slow: dict[tuple[str, str], list[SlowReading]] = {}
    checks: dict[str, dict[str, int]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-servers-")))
        print(f"part 1: the floor (bench/floor_app.py), logs in {workdir}", flush=True)
        with ExitStack() as floors:
            servers = [
                floors.enter_context(serve(c, "bench.floor_app:create_app", "postgresql:///unused", workdir, "floor"))
                for c in candidates
            ]
            for n, server in enumerate(servers):
                warm(server, templates, f"{run_id}w{n}", args.warmup)
            for rnd in range(args.rounds):
                for c in FLOOR_CONCURRENCY:
                    for n, server in in_turn(list(enumerate(servers)), rnd):
                        phase = receiver.measure(server, templates, c, args.seconds, f"{run_id}f{n}r{rnd}c{c}x")
                        r = receiver.reading(server, c, phase)
                        floor.setdefault((server.name, c), []).append(r)
                        print(
                            f"round {rnd + 1} floor c={c:<2} {server.name:<16} {r.acks_per_s:6.0f}/s"
                            f"  cpu/req {r.cpu_ms['server']:5.2f} ms  errors {r.errors}",
                            flush=True,
                        )
        print("parts 2 and 3: the receiver (webhooks:create_app), under load and beside slow clients", flush=True)
        # One receiver server at a time: each may hold 2 x 16 PostgreSQL
        # connections, and the server is shared with other runs.
        urls = {c.name: stack.enter_context(common.bench_database(f"srv{n}")) for n, c in enumerate(candidates)}
        acked: dict[str, list[str]] = {c.name: [] for c in candidates}
        for rnd in range(args.rounds):
            for n, candidate in in_turn(list(enumerate(candidates)), rnd):
                with serve(candidate, "webhooks:create_app", urls[candidate.name], workdir, f"receiver{rnd}") as server:
                    measure_receiver(
                        server,
                        templates,
                        args,
                        f"{run_id}{n}r{rnd}",
                        rnd,
                        load=load,
                        slow=slow,
                        acked=acked[server.name],
                    )
        for name, ids in acked.items():
            checks[name] = {"acked": len(ids), "stored": stored(urls[name], ids)}
    return {
        "floor": {key: receiver.medians(rs) for key, rs in floor.items()},
        "load": {key: receiver.medians(rs) for key, rs in load.items()},
        "slow": {key: slow_medians(rs) for key, rs in slow.items()},
        "checks": checks,
    }


def measure_receiver(
    server: receiver.Server,
    templates: Sequence[str],
    args: argparse.Namespace,
    tag: str,
    rnd: int,
    *,
    load: dict[str, list[receiver.Reading]],
    slow: dict[tuple[str, str], list[SlowReading]],
    acked: list[str],
) -> None:
    """One round of parts 2 and 3 on a freshly started server: warm-up, load, then each slow-client scenario."""
    acked.extend(warm(server, templates, f"{tag}w", args.warmup))
    phase = receiver.measure(server, templates, LOAD_CONCURRENCY, args.seconds, f"{tag}L")
    acked.extend(phase.acked_ids)
    r = receiver.reading(server, LOAD_CONCURRENCY, phase)
    load.setdefault(server.name, []).append(r)
    print(
        f"round {rnd + 1} receiver c={LOAD_CONCURRENCY} {server.name:<16} {r.acks_per_s:6.0f} acks/s"
        f"  p99 {r.p99_ms:7.2f} ms  cpu/ack {r.cpu_ms_per_ack:5.2f} ms  errors {r.errors}",
        flush=True,
    )
    for s, scenario in enumerate(SCENARIOS):
        reading, ids = slow_phase(server, templates, scenario, args.slow_seconds, f"{tag}S{s}")
        acked.extend(ids)
        slow.setdefault((server.name, scenario), []).append(reading)
        print(
            f"round {rnd + 1} {scenario:<9} {server.name:<16} {reading.acked:4}/{reading.sent:<4} ok"
            f"  p50 {reading.p50_ms:7.1f}  p99 {reading.p99_ms:7.1f}  max {reading.max_ms:7.1f} ms"
            f"  failures {reading.failures}  timeouts {reading.timeouts}  shed {reading.shed}",
            flush=True,
        )
        time.sleep(1.0)  # let a stalled server drain what the slow clients left it


def stored(database_url: str, ids: Sequence[str]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM stripe_events WHERE id = ANY(%s)", (list(ids),)).fetchone()
    return int(row[0]) if row else 0


def report(result: dict[str, Any], args: argparse.Namespace, candidates: Sequence[Candidate]) -> bool:
    """The tables; False if a target was missed or an acked event is not stored."""
    floor, load, slow, checks = result["floor"], result["load"], result["slow"], result["checks"]
    base = candidates[0].name
    top = FLOOR_CONCURRENCY[-1]
    common.print_table(
        f"Floor: an empty Flask handler (median of {args.rounds} rounds, {args.seconds:g} s each;"
        f" {WORKERS} processes each; CPU of the server's process tree)",
        [
            "server",
            *(f"c={c} req/s" for c in FLOOR_CONCURRENCY),
            *(f"c={c} CPU ms/req" for c in FLOOR_CONCURRENCY),
            f"CPU at c={top} / {base}'s",
        ],
        [
            [
                c.how,
                *(f"{floor[(c.name, n)].acks_per_s:.0f}" for n in FLOOR_CONCURRENCY),
                *(f"{floor[(c.name, n)].cpu_ms['server']:.2f}" for n in FLOOR_CONCURRENCY),
                f"{floor[(c.name, top)].cpu_ms['server'] / floor[(base, top)].cpu_ms['server']:.2f}",
            ]
            for c in candidates
        ],
    )
    common.print_table(
        f"Receiver (webhooks:create_app) at c={LOAD_CONCURRENCY}"
        f" (median of {args.rounds} rounds, {args.seconds:g} s each)",
        ["server", "acks/s", f"/ {base}'s", "p50 / p99 ms", "CPU ms/ack (web + pg + redis)", f"/ {base}'s", "errors"],
        [
            [
                c.how,
                f"{load[c.name].acks_per_s:.0f}",
                f"{load[c.name].acks_per_s / load[base].acks_per_s:.2f}x",
                f"{load[c.name].p50_ms:.2f} / {load[c.name].p99_ms:.2f}",
                receiver.cpu_cell(load[c.name]),
                f"{load[c.name].cpu_ms_per_ack / load[base].cpu_ms_per_ack:.2f}",
                load[c.name].errors,
            ]
            for c in candidates
        ],
    )
    labels = {
        "none": "no slow clients",
        "drip-head": f"{IDLE} idle + {DRIP} dripping headers",
        "drip-body": f"{IDLE} idle + {DRIP} dripping bodies",
    }
    common.print_table(
        f"Deliveries beside slow clients ({SENDERS} senders, a fresh connection each, one per"
        f" {INTERVAL_S * 1000:.0f} ms per sender, {TIMEOUT_S:g} s timeout; {args.rounds} rounds of"
        f" {args.slow_seconds:g} s: p50/p99 medians of the rounds, max of all, counts summed)",
        ["server", "slow clients", "200 / sent", "p50 ms", "p99 ms", "max ms", "failures", "timeouts", "shed"],
        [
            [
                c.how,
                labels[scenario],
                f"{r.acked} / {r.sent}",
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                f"{r.max_ms:.0f}",
                r.failures,
                r.timeouts,
                r.shed,
            ]
            for scenario in SCENARIOS
            for c in candidates
            for r in [slow[(c.name, scenario)]]
        ],
    )
    common.print_table(
        "Every acked event is stored",
        ["server", "acked (200)", "stored", "lost"],
        [[name, v["acked"], v["stored"], v["acked"] - v["stored"]] for name, v in checks.items()],
    )
    targets = [
        common.Target(f"{TARGET_SERVER}, {labels[scenario]}: delivery p99 (ms)", r.p99_ms, TARGET_P99_MS, "<=")
        for scenario in SCENARIOS[1:]
        if (r := slow.get((TARGET_SERVER, scenario))) is not None
    ]
    if targets:
        met = common.print_targets(targets)
    else:
        print(f"\nno targets: {TARGET_SERVER} was not among the candidates")
        met = True
    intact = all(v["acked"] == v["stored"] for v in checks.values())
    path = common.record(
        "servers",
        {
            "args": vars(args),
            "workers": WORKERS,
            "threads": THREADS,
            "floor": [vars(r) for r in floor.values()],
            "load": [vars(r) | {"cpu_ms_per_ack": r.cpu_ms_per_ack} for r in load.values()],
            "slow": [{"server": k[0], "scenario": k[1], **vars(r)} for k, r in slow.items()],
            "checks": checks,
            "targets": [vars(t) | {"met": t.met} for t in targets],
        },
    )
    print(f"\nrecorded in {path.relative_to(common.ROOT)}")
    return met and intact


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one round, short phases (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the candidates (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per load phase (default 3)")
    parser.add_argument("--slow-seconds", type=float, default=6.0, help="seconds of deliveries per slow-client phase")
    names = ",".join(c.name for c in CANDIDATES)
    parser.add_argument("--candidates", default=names, help=f"default {names}")
    args = parser.parse_args(argv)
    args.warmup = 2.0
    if args.quick:
        args.rounds, args.seconds, args.slow_seconds, args.warmup = 1, 1.5, 4.0, 1.0
    wanted = args.candidates.split(",")
    unknown = set(wanted) - {c.name for c in CANDIDATES}
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    candidates = [c for c in CANDIDATES if c.name in wanted]
    # Every slow phase holds a few hundred sockets open at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    return 0 if report(run(args, candidates), args, candidates) else 1


if __name__ == "__main__":
    raise SystemExit(main())
