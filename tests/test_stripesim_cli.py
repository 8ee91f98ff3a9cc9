"""``python -m stripesim`` runs as a process and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests
from proxy import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_cli_serves_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripesim",
            "--port",
            str(port),
            "--api-key",
            "sk_test_cli",
            "--start",
            "2025-01-01T00:00:00Z",
            "--api-version",
            "2024-06-20",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ready" in line
        assert f":{port}" in line
        base = f"http://127.0.0.1:{port}"
        cus = requests.post(f"{base}/_sim/create_customer", json={"email": "x@example.com"}, timeout=5).json()
        sub = requests.post(f"{base}/_sim/create_subscription", json={"customer": cus["id"]}, timeout=5).json()
        assert sub["current_period_start"] == 1735689600  # the 2024-06-20 shape
        resp = requests.get(f"{base}/v1/subscriptions", auth=("sk_test_cli", ""), timeout=5)
        assert resp.status_code == 200
        assert resp.headers["Date"] == "Wed, 01 Jan 2025 00:00:00 GMT"
        assert [s["id"] for s in resp.json()["data"]] == [sub["id"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        proc.stderr.close()
