"""Start the product's real processes (as the Procfile does) for crash tests.

Each runs in its own process group, so kill -9 reaches a master and all of
its children at once, as when a container or a machine dies.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _spawn(argv: list[str], env: dict[str, str] | None, log: Path | None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True, stdout=out, stderr=out
        )
    finally:
        if log is not None:
            out.close()


def start_worker(
    processes: int = 1, threads: int = 2, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`dramatiq worker`, as the Procfile's `worker` line."""
    argv = [str(BIN / "dramatiq"), "worker.app:setup", "--processes", str(processes), "--threads", str(threads)]
    argv.append("--skip-logging")
    return _spawn(argv, env, log)


def procfile_command(name: str) -> tuple[list[str], dict[str, str]]:
    """The Procfile's line for `name`: its argv (the command found in this venv) and the variables it sets."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(":")
        if process.strip() != name:
            continue
        words = shlex.split(command)
        variables = {}
        while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            key, _, value = words.pop(0).partition("=")
            variables[key] = value
        if (BIN / words[0]).exists():
            words[0] = str(BIN / words[0])
        return words, variables
    msg = f"the Procfile has no {name} line"
    raise LookupError(msg)


def start_web(port: int, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """The Procfile's `web` line, on `port`; returns once it answers /healthz."""
    argv, variables = procfile_command("web")
    proc = _spawn(argv, {**variables, **(env or {}), "PORT": str(port)}, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    kill9(proc)
    msg = f"the web process did not answer on port {port} (exit code {proc.returncode})"
    raise RuntimeError(msg)


def start_redis(port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A private redis-server on `port`, without persistence: a restart loses everything in it."""
    server = shutil.which("redis-server")
    if server is None:
        msg = "redis-server is not installed (make services installs it)"
        raise RuntimeError(msg)
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = _spawn(argv, None, log)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
        finally:
            client.close()
    kill9(proc)
    msg = f"redis-server did not answer on port {port}"
    raise RuntimeError(msg)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Graceful stop (TERM), then kill if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill9(proc)
