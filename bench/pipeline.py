"""A burst of stored events drained by the Procfile's worker processes.

    python -m bench.pipeline [--events N] [--quick] [--seed S] [--threads T] [--processes P]

The events (bench.burst: the simulator's own, cached) are stored through the
event store as the receiver stores them (`received`), all queued in Dramatiq,
then the worker is started with the Procfile's command line and timed until no
event is received, processing or failed. CPU is read from /proc for the worker's
processes, PostgreSQL's for the bench's database (its backends and the shared
WAL writer, checkpointer...) and the Redis server; other databases' backends
are not counted. Then the same number of messages is drained by the same
worker command running an actor that does nothing (bench/noop_actor.py):
Dramatiq's own cost on this machine, the floor under every event.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from bench import burst
from bench.common import (
    BIN,
    RESULTS,
    ROOT,
    CpuMeter,
    Target,
    bench_database,
    bench_env,
    peak_rss_mb,
    postgres_pids,
    print_table,
    print_targets,
    process_tree,
    record,
    redis_pids,
    start,
    stop,
)
from bench.webhook_load import event_templates, print_reference, reference_costs

TARGET_EVENTS_PER_S = 1200
INSERT_BATCH = 1000
ENQUEUE_BATCH = 1000
POLL_S = 0.5


def procfile_worker(processes: int | None, threads: int | None) -> tuple[list[str], dict[str, str]]:
    """The Procfile's `worker:` command and the variables it sets, with --processes/--threads replaced when given."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("worker:"):
            words = shlex.split(line.split(":", 1)[1])
            break
    else:
        msg = "the Procfile has no worker: line"
        raise RuntimeError(msg)
    variables = {}
    while "=" in words[0]:  # NAME=value before the command, as a shell reads it
        name, value = words.pop(0).split("=", 1)
        variables[name] = value
    for flag, value in (("--processes", processes), ("--threads", threads)):
        if value is not None:
            words[words.index(flag) + 1] = str(value)
    return [str(BIN / words[0]), *words[1:]], variables


def store(url: str, bodies: Sequence[str]) -> list[str]:
    """Insert every event through the event store; returns their ids."""
    from subsync.envelope import parse_event
    from subsync.store import events

    ids = []
    with psycopg.connect(url, row_factory=dict_row) as conn:
        for i in range(0, len(bodies), INSERT_BATCH):
            with conn.transaction():
                for body in bodies[i : i + INSERT_BATCH]:
                    header = parse_event(json.loads(body))
                    events.insert(conn, header, body)
                    ids.append(header.id)
    return ids


def queue(ids: Sequence[str], env: dict[str, str]) -> int:
    """Send the ids as the product does (subsync.queue.EventQueue), a batch at a time."""
    from subsync import config
    from subsync.broker import make_broker
    from subsync.queue import EventQueue

    event_queue = EventQueue(make_broker(config.load(env)))
    sent = 0
    for i in range(0, len(ids), ENQUEUE_BATCH):
        sent += event_queue.send(ids[i : i + ENQUEUE_BATCH], always_try=True)
    return sent


def status_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT status, count(*) FROM stripe_events GROUP BY status")}


def wait_drained(conn: psycopg.Connection[Any], timeout: float, alive: Callable[[], bool]) -> bool:
    """Until no event is received, processing or failed (failed ones are retried after a backoff)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        row = conn.execute(
            "SELECT count(*) FROM stripe_events WHERE status IN ('received', 'processing', 'failed')"
        ).fetchone()
        if row is not None and row[0] == 0:
            return True
        time.sleep(POLL_S)
    return False


def drop_namespace(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)


def run(n: int, seed: int, processes: int | None, threads: int | None) -> dict[str, Any]:
    reference = reference_costs(event_templates())
    t0 = time.perf_counter()
    bodies = burst.burst(n, seed)
    generated_s = time.perf_counter() - t0
    argv, variables = procfile_worker(processes, threads)
    with bench_database("pipeline") as url:
        env = bench_env(url, **variables)
        t0 = time.perf_counter()
        ids = store(url, bodies)
        stored_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sent = queue(ids, env)
        queued_s = time.perf_counter() - t0
        if sent != len(ids):
            msg = f"queued {sent} of {len(ids)} events"
            raise RuntimeError(msg)

        log = RESULTS / "pipeline-worker.log"
        with psycopg.connect(url, autocommit=True) as conn:
            proc = start(argv, env, log=log)
            workers = lambda: process_tree(proc.pid)  # noqa: E731
            meters = {
                "worker": CpuMeter(workers),
                "postgres": CpuMeter(lambda: postgres_pids(url)),
                "redis": CpuMeter(lambda: redis_pids(env["REDIS_URL"])),
            }
            for meter in meters.values():
                meter.start()
            started = time.perf_counter()
            try:
                drained = wait_drained(conn, timeout=60 + n / 50, alive=lambda: proc.poll() is None)
                drain_s = time.perf_counter() - started
                cpu = {name: meter.stop() for name, meter in meters.items()}
                rss = peak_rss_mb(workers())
            finally:
                stop(proc)
            counts = status_counts(conn)
            span = conn.execute(
                "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) AS s,"
                " sum(attempts) AS attempts, count(*) FILTER (WHERE attempts > 1) AS retried FROM stripe_events"
            ).fetchone()
        floor = dramatiq_floor(n, argv, env)
        drop_namespace(env["REDIS_URL"], env["QUEUE_NAMESPACE"])
    assert span is not None
    apply_s = float(span[0] or 0.0)
    return {
        "events": n,
        "seed": seed,
        "worker": " ".join([*(f"{k}={v}" for k, v in variables.items()), "dramatiq", *argv[1:]]),
        "generated_s": round(generated_s, 2),
        "stored_s": round(stored_s, 2),
        "queued_s": round(queued_s, 2),
        "drained": drained,
        "drain_s": round(drain_s, 2),
        "apply_s": round(apply_s, 2),
        "events_per_s": round(n / apply_s, 1) if apply_s else 0.0,
        "events_per_s_from_start": round(n / drain_s, 1),
        "cpu_ms_per_event": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
        "cpu_ms_per_event_total": round(sum(cpu.values()) * 1000 / n, 3),
        "peak_rss_mb": round(rss, 1),
        "statuses": counts,
        "attempts": int(span[1] or 0),
        "retried": int(span[2] or 0),
        "dramatiq_floor": floor,
        "reference_us": reference,
    }


def dramatiq_floor(n: int, argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """`n` messages drained by the same worker command running bench.noop_actor: Dramatiq's own cost."""
    from bench.noop_actor import QUEUE, message
    from subsync import config
    from subsync.broker import make_broker

    client = redis.Redis.from_url(env["REDIS_URL"])
    key = f"{env['QUEUE_NAMESPACE']}:{QUEUE}"
    sender = make_broker(config.load(env))
    for i in range(n):
        sender.enqueue(message(f"evt_floor_{i}"))
    proc = start([argv[0], "bench.noop_actor:setup", *argv[2:]], env, log=RESULTS / "pipeline-floor.log")
    meters = {
        "worker": CpuMeter(lambda: process_tree(proc.pid)),
        "redis": CpuMeter(lambda: redis_pids(env["REDIS_URL"])),
    }
    for meter in meters.values():
        meter.start()
    started = time.perf_counter()
    try:
        deadline = started + 60 + n / 200
        # A message leaves the .msgs hash when it is acked.
        while client.hlen(f"{key}.msgs") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        left = int(client.hlen(f"{key}.msgs"))
        cpu = {name: meter.stop() for name, meter in meters.items()}
    finally:
        stop(proc)
    return {
        "messages": n,
        "left": left,
        "messages_per_s": round((n - left) / elapsed, 1),
        "cpu_ms_per_message": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
    }


def report(result: dict[str, Any]) -> bool:
    counts = result["statuses"]
    cpu = result["cpu_ms_per_event"]
    print_table(
        f"Pipeline: {result['events']} stored events drained by `{result['worker']}`",
        ["measure", "value"],
        [
            ["events generated / read from cache (s)", result["generated_s"]],
            ["stored through events.insert (s)", result["stored_s"]],
            ["queued through subsync.queue.EventQueue (s)", result["queued_s"]],
            ["drain, from worker start (s)", result["drain_s"]],
            ["applying, first to last processed_at (s)", result["apply_s"]],
            ["events applied/s (first to last applied)", result["events_per_s"]],
            ["events applied/s (from worker start)", result["events_per_s_from_start"]],
            ["CPU ms/event, worker processes", cpu["worker"]],
            ["CPU ms/event, PostgreSQL (this database's backends, WAL writer, checkpointer...)", cpu["postgres"]],
            ["CPU ms/event, Redis", cpu["redis"]],
            ["CPU ms/event, all", result["cpu_ms_per_event_total"]],
            ["worker peak RSS (MB, largest process)", result["peak_rss_mb"]],
        ],
    )
    floor = result["dramatiq_floor"]
    print_table(
        "Floor: the same worker command and broker, an actor that does nothing (bench/noop_actor.py)",
        ["measure", "value"],
        [
            ["messages drained", floor["messages"] - floor["left"]],
            ["messages/s", floor["messages_per_s"]],
            ["CPU ms/message, worker processes", floor["cpu_ms_per_message"]["worker"]],
            ["CPU ms/message, Redis", floor["cpu_ms_per_message"]["redis"]],
        ],
    )
    finished = counts.get("processed", 0) + counts.get("ignored", 0)
    print_table(
        "Outcome",
        ["status", "events"],
        [[status, counts.get(status, 0)] for status in ("processed", "ignored", "failed", "processing", "received")]
        + [["attempts in all", result["attempts"]], ["events attempted more than once", result["retried"]]],
    )
    complete = result["drained"] and finished == result["events"] and counts.get("failed", 0) == 0
    print(
        f"\nEvery event processed or ignored, none failed: {'yes' if complete else 'NO'}"
        f" ({finished} of {result['events']})"
    )
    print_reference(result["reference_us"])
    met = print_targets([Target("events applied/s", result["events_per_s"], TARGET_EVENTS_PER_S, ">=")])
    return complete and met


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="2,000 events: a check that it runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, help="instead of the Procfile's")
    parser.add_argument("--threads", type=int, help="instead of the Procfile's")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else args.events
    result = run(n, args.seed, args.processes, args.threads)
    ok = report(result)
    print(f"\nrecorded in {record('pipeline', result)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
