"""stripe-sync-engine, the peer the benches measure ours against.

`@supabase/stripe-sync-engine` (pinned in bench/peer/package.json) is
installed from npm into bench/peer/node_modules (ignored by git) the first
time a bench needs it, and served by bench/peer/server.cjs: node:http, one
process per core, `StripeSync.processWebhook` inside each request (it
verifies, then applies the event to its own tables: ack and apply together).
It runs its own migrations into the `stripe` schema of a database of its own.
Its Stripe client points at bench/peer/stripe_stub.py, which answers the
few calls it makes (a checkout session's line items, the prices they name).

Where `node` or `npm` is missing, or the install fails, `unavailable()` says
why and the benches skip the peer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import common

PEER_DIR = Path(__file__).resolve().parent
MODULES = PEER_DIR / "node_modules"
PACKAGE = "@supabase/stripe-sync-engine"
# The tables it writes for the objects of the events the benches send.
TABLES = {
    "subscription": "subscriptions",
    "invoice": "invoices",
    "customer": "customers",
    "checkout.session": "checkout_sessions",
}


def _pinned() -> dict[str, str]:
    return json.loads((PEER_DIR / "package.json").read_text())["dependencies"]


def _installed(name: str) -> str | None:
    try:
        return json.loads((MODULES / name / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def version() -> str:
    return _installed(PACKAGE) or "not installed"


def unavailable() -> str | None:
    """None when the peer can be served; otherwise why not, in one line. Installs it when needed."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH: stripe-sync-engine is not measured (apt-get install nodejs npm)"
    if all(_installed(name) == wanted for name, wanted in _pinned().items()):
        return None
    print(f"installing {PACKAGE} {_pinned()[PACKAGE]} from npm into {MODULES.relative_to(common.ROOT)}", flush=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
        cwd=PEER_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or _installed(PACKAGE) is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"npm install of {PACKAGE} failed ({tail[0]}): stripe-sync-engine is not measured"
    return None


@contextmanager
def empty_database(name: str) -> Iterator[str]:
    """A fresh database with nothing in it (the peer migrates it), dropped afterwards."""
    db_name = f"subsync_bench_{name}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(common.ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    try:
        yield f"postgresql://root@127.0.0.1:5432/{db_name}"
    finally:
        with psycopg.connect(common.ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db_name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}"')


@dataclass
class Peer:
    database_url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    stub_port: int
    stub: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """node's primary and its workers."""
        return common.process_tree(self.proc.pid)

    def stub_pids(self) -> list[int]:
        return common.process_tree(self.stub.pid)

    def stripe_calls(self) -> dict[str, int]:
        """What it asked the stand-in for Stripe's API, by kind."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stub_port}/__stats", timeout=5) as answer:
            return dict(json.loads(answer.read()))

    def rows(self) -> dict[str, int]:
        """Rows in its tables for the objects the benches send."""
        with psycopg.connect(self.database_url) as conn:
            return {
                table: int(conn.execute(f'SELECT count(*) FROM stripe."{table}"').fetchone()[0])  # type: ignore[index]
                for table in TABLES.values()
            }

    def present(self, ids: dict[str, set[str]]) -> tuple[int, int]:
        """How many of these objects (ids by Stripe object type) are in its tables, and of how many."""
        found = expected = 0
        with psycopg.connect(self.database_url) as conn:
            for kind, wanted in ids.items():
                table = TABLES.get(kind)
                if table is None or not wanted:
                    continue
                expected += len(wanted)
                row = conn.execute(f'SELECT count(*) FROM stripe."{table}" WHERE id = ANY(%s)', (list(wanted),))
                found += int(row.fetchone()[0])  # type: ignore[index]
        return found, expected


def objects_of(bodies: Any) -> dict[str, set[str]]:
    """The ids of the events' data.object, by Stripe object type."""
    ids: dict[str, set[str]] = {}
    for body in bodies:
        obj = json.loads(body)["data"]["object"]
        if isinstance(obj.get("id"), str):
            ids.setdefault(obj.get("object", ""), set()).add(obj["id"])
    return ids


@contextmanager
def serve(workdir: Path, events_file: Path, name: str = "peer") -> Iterator[Peer]:
    """The stand-in for Stripe's API (knowing the objects of `events_file`), then stripe-sync-engine on it."""
    stub_port = common.free_port()
    stub = common.start(
        [sys.executable, "-m", "bench.peer.stripe_stub", "--port", str(stub_port), "--events", str(events_file)],
        dict(os.environ),
        log=workdir / f"{name}-stripe-stub.log",
    )
    try:
        if not common.wait_until(lambda: _accepting(stub_port) or stub.poll() is not None, timeout=30):
            msg = f"{name}: the Stripe stand-in did not listen on {stub_port}"
            raise SystemExit(msg)
        with empty_database(name) as url:
            port = common.free_port()
            ready = workdir / f"{name}-{uuid.uuid4().hex[:6]}.ready"  # never one left by an earlier run
            log = workdir / f"{name}.log"
            env = {
                **os.environ,
                "PORT": str(port),
                "DATABASE_URL": url,
                "STRIPE_WEBHOOK_SECRET": common.SECRET,
                "STRIPE_API_PORT": str(stub_port),
                "PEER_READY_FILE": str(ready),
            }
            proc = common.start(["node", str(PEER_DIR / "server.cjs")], env, log=log)
            try:
                if not common.wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60):
                    msg = f"{name}: stripe-sync-engine did not start in 60 s (log: {log})"
                    raise SystemExit(msg)
                if proc.poll() is not None:
                    msg = f"{name}: node exited with {proc.returncode} (log: {log})"
                    raise SystemExit(msg)
                peer = Peer(url, port, proc, log, stub_port, stub)
                try:
                    peer.rows()
                except psycopg.Error as exc:
                    msg = f"{name}: its migrations did not create its tables ({exc}; log: {log})"
                    raise SystemExit(msg) from exc
                yield peer
            finally:
                common.stop(proc)
                time.sleep(0.2)  # its pools' connections close before the database is dropped
    finally:
        common.stop(stub)


def _accepting(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
