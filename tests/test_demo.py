"""`make demo` end to end: the simulator, the Procfile's processes and the story, checked against Stripe's truth.

The demo runs as `make demo` runs it, in a database of its own named after
this test run (it drops and creates it), with its own queue namespace and
free ports, so that it cannot meet a parallel run or a developer's demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from helpers import ADMIN_URL, TEST_DB

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_its_story_and_ends_equal_to_stripe(tmp_path):
    database = f"{TEST_DB}_demo"
    env = {
        **os.environ,
        "DEMO_DATABASE": database,
        "DEMO_LOGS": str(tmp_path),
        # Redis itself, not the proxy this test process serves and the fault tests cut.
        "REDIS_URL": f"redis://127.0.0.1:{os.environ.get('TEST_REDIS_PORT', '6379')}/0",
    }
    try:
        demo = subprocess.run(
            [sys.executable, "scripts/demo.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    out = demo.stdout
    assert demo.returncode == 0, out[-3000:] + demo.stderr[-3000:]
    assert "all 32 subscriptions equal Stripe's state" in out
    # The feature check: what the application's gating query answers.
    assert "SELECT access, features, owed_amount FROM customer_access" in out
    assert "full       owed   0.00  premium-01, premium-02 and 11 more" in out  # base and add-on's features
    # The refund, in the ledger.
    assert "REFUNDED        1 rows       10.00 usd" in out
    # The reactivation: its charge of the owed days, made once.
    assert "on the new subscription's first invoice" in out
    assert "run again, it charges nothing more: an earlier run made them" in out
    # The monthly base with a yearly add-on: two items, each with its own period.
    assert "item price_premium_monthly, its period to" in out
    assert "item price_addon_yearly, its period to" in out
