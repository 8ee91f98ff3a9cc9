"""Start the product's real processes (as the Procfile does) for crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start_worker(processes: int = 1, threads: int = 2, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`dramatiq worker` in its own process group, so kill -9 reaches every process."""
    return subprocess.Popen(
        [str(BIN / "dramatiq"), "worker", "--processes", str(processes), "--threads", str(threads), "--skip-logging"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
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
