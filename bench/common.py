"""What every bench shares: a database of its own, process CPU and memory readings, the table.

The machines are shared and noisy, so a bench compares against a baseline in
the same run and reports medians; CPU is read from /proc (user + system time
of the processes that do the work, PostgreSQL and Redis included), which
other load on the machine does not inflate the way wall time is inflated.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
SECRET = "whsec_bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- a database and queue namespace of the bench's own --------------------------------------


@contextmanager
def bench_database(name: str) -> Iterator[str]:
    """A fresh database with the schema applied, dropped afterwards. Yields its URL."""
    db_name = f"subsync_bench_{name}_{uuid.uuid4().hex[:6]}"
    url = f"postgresql://root@127.0.0.1:5432/{db_name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    try:
        from subsync import db

        db.apply_schema(url)
        yield url
    finally:
        from subsync import db

        db.close_pool()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db_name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}"')


def bench_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment for the product's processes under bench: own database and queue namespace, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "QUEUE_NAMESPACE": f"subsync-bench-{uuid.uuid4().hex[:6]}",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_MODE": "test",
        "LOG_FORMAT": "json",
        **extra,
    }


# --- processes: start, CPU, memory ----------------------------------------------------------


def start(argv: Sequence[str], env: dict[str, str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a product process in its own process group (so stop() reaches its children)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(list(argv), cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=out)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import signal

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(root_pid: int) -> list[int]:
    """The pid and every descendant (the web server's and dramatiq's workers are children)."""
    tree = _children()
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (postgres backends, redis-server)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() in names:
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def service_pids() -> list[int]:
    """PostgreSQL's and Redis's processes: their CPU is part of the cost of an ack or an event."""
    return pids_named("postgres", "redis-server")


def postgres_pids(database_url: str) -> list[int]:
    """PostgreSQL's processes working for one database: its backends and the shared
    auxiliary ones (WAL writer, checkpointer...), not other databases' backends.

    The server is shared with other runs; service_pids() would count their load too.
    """
    db_name = database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE (datname = %s OR datname IS NULL) AND pid <> pg_backend_pid()",
            (db_name,),
        ).fetchall()
    return [row[0] for row in rows]


def redis_pids(redis_url: str) -> list[int]:
    """The Redis server behind this URL (its own process_id), not every redis-server
    on the machine; asked at each reading, so a restarted Redis is followed.
    """
    import redis

    try:
        return [int(redis.Redis.from_url(redis_url, socket_timeout=2).info("server")["process_id"])]
    except (redis.RedisError, KeyError, ValueError):
        return []


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes (and their waited-for children), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited: a bench keeps its processes alive across a measurement
        # utime, stime, cutime, cstime are fields 14-17 (1-based); after the comm: 11-14 (0-based).
        total += sum(int(v) for v in fields[11:15])
    return total / CLOCK_TICKS


def peak_rss_mb(pids: Iterable[int]) -> float:
    """The largest peak resident set (VmHWM) among these processes, in MB."""
    peak = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


class CpuMeter:
    """CPU spent by a set of processes between start() and stop(), sampled from /proc.

    `pids` is called at each reading, so processes forked in between (gunicorn
    workers, PostgreSQL backends of a new pool) are counted from when they are
    first seen.
    """

    def __init__(self, pids: Any) -> None:
        self._pids = pids
        self._start: dict[int, float] = {}

    def _read(self) -> dict[int, float]:
        return {pid: cpu_seconds([pid]) for pid in self._pids()}

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        now = self._read()
        return sum(v - self._start.get(pid, 0.0) for pid, v in now.items())


# --- numbers and the table ------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for: met when `value op limit`."""

    name: str
    value: float
    limit: float
    op: str  # ">=" or "<="

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load1": round(os.getloadavg()[0], 2)}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A markdown table, numbers as given (the caller rounds)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def print_targets(targets: Sequence[Target]) -> bool:
    print_table(
        "Targets",
        ["target", "measured", "limit", "met"],
        [[t.name, round(t.value, 2), f"{t.op} {t.limit}", "yes" if t.met else "NO"] for t in targets],
    )
    return all(t.met for t in targets)


def record(bench: str, payload: dict[str, Any]) -> Path:
    """Append one JSON line to bench/results/<bench>.jsonl (kept for history, not committed)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{bench}.jsonl"
    line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **payload}
    with path.open("a") as f:
        f.write(json.dumps(line, default=str) + "\n")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a server the bench starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@dataclass(frozen=True)
class Ratio:
    """A target set against a peer or a floor measured in the same run: met when `ours / theirs op limit`.

    `theirs` is None when the other side could not be measured: the target is
    printed as skipped, and counts as neither met nor missed.
    """

    name: str
    ours: float
    theirs: float | None
    limit: float
    op: str  # ">=" or "<="
    unit: str = ""
    # The same ratio in each round, to read the spread the medians hide.
    per_round: tuple[float, ...] = ()

    @property
    def ratio(self) -> float | None:
        return None if self.theirs is None or self.theirs == 0 else self.ours / self.theirs

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio >= self.limit if self.op == ">=" else ratio <= self.limit


def print_ratios(ratios: Sequence[Ratio]) -> bool:
    """The targets as a table; False if one was missed (skipped ones are not)."""
    print_table(
        "Targets (ratios measured in this run)",
        ["target", "ours", "theirs", "ratio (of the medians)", "limit", "result", "ratio in each round"],
        [
            [
                r.name,
                f"{r.ours:.2f}{r.unit}",
                "—" if r.theirs is None else f"{r.theirs:.2f}{r.unit}",
                "—" if r.ratio is None else f"{r.ratio:.2f}x",
                f"{r.op} {r.limit}x",
                {True: "met", False: "MISSED", None: "skipped"}[r.met],
                ", ".join(f"{v:.2f}" for v in r.per_round) or "—",
            ]
            for r in ratios
        ],
    )
    return all(r.met is not False for r in ratios)
