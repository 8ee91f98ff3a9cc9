"""The house's shape, checked: what a web process loads, what importing builds, the schema against the rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from processes import ROOT

from subsync.access import Access, time_dependent, time_dependent_sql
from subsync.transitions import SUBSCRIPTION_STATUS_RANK

# The receiver stores and queues; it never applies. Sending by actor name
# keeps the apply protocol, the handlers and the rules out of web processes.
WEB_MAY_LOAD = {
    "subsync",
    "subsync.broker",
    "subsync.config",
    "subsync.db",
    "subsync.envelope",
    "subsync.event_types",
    "subsync.intake",
    "subsync.logs",
    "subsync.metrics",
    "subsync.queue",
    "subsync.store",
    "subsync.store.event_queries",
    "subsync.store.events",
    "subsync.store.jobs",
    "webhooks",
    "webhooks.group_commit",
    "webhooks.health",
    "webhooks.probes",
    "webhooks.receiver",
    "webhooks.services",
}
PROJECT = ("subsync", "webhooks", "worker", "reconciler", "stripesim")


def loaded_by(code: str) -> set[str]:
    script = f"""
import json, sys
{code}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {PROJECT!r})))
"""
    env = {
        "STRIPE_WEBHOOK_SECRET": "whsec_layout",
        "STRIPE_MODE": "test",
        "DATABASE_URL": "postgresql://root@127.0.0.1:1/none",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_a_web_process_loads_neither_the_worker_nor_the_rules_nor_the_reconciler():
    loaded = loaded_by("import webhooks; webhooks.create_app()")
    assert loaded == WEB_MAY_LOAD


def test_importing_any_module_builds_no_broker():
    code = """
import dramatiq.broker as b
import importlib, pkgutil
for package in ("subsync", "webhooks", "worker", "reconciler"):
    for info in pkgutil.walk_packages([package], prefix=package + "."):
        importlib.import_module(info.name)
assert b.global_broker is None, b.global_broker
"""
    loaded_by(code)


def test_the_partial_index_of_the_grace_check_is_the_time_dependent_rule(conn):
    # PostgreSQL prints a predicate in its own normal form: compare the
    # schema's index with one built from the rule on a copy of the table.
    conn.execute("CREATE TEMP TABLE rule_copy (LIKE subscriptions)")
    conn.execute(f"CREATE INDEX rule_copy_idx ON rule_copy (current_period_end) WHERE {time_dependent_sql()}")

    def predicate(index: str) -> str:
        row = conn.execute(
            "SELECT pg_get_expr(indpred, indrelid) AS p FROM pg_index WHERE indexrelid = %s::regclass", (index,)
        ).fetchone()
        return row["p"]

    assert predicate("subscriptions_time_dependent_idx") == predicate("rule_copy_idx")


def test_the_grace_checks_sql_predicate_agrees_with_the_rule_on_every_status_and_access(conn):
    # The predicate reads no time: status and access alone decide, so every
    # pair (and a status Stripe may add later) covers it.
    pairs = [(status, access) for status in [*SUBSCRIPTION_STATUS_RANK, "some_new_status"] for access in Access]
    rows = conn.execute(
        f"SELECT status, access, {time_dependent_sql()} AS moves"
        " FROM unnest(%s::text[], %s::text[]) AS t(status, access)",
        ([status for status, _ in pairs], [access.value for _, access in pairs]),
    ).fetchall()
    in_sql = {(r["status"], Access(r["access"])): r["moves"] for r in rows}
    assert in_sql == {(status, access): time_dependent(status, access) for status, access in pairs}


def test_the_environment_is_read_in_the_config_module_only():
    readers = []
    for package in ("subsync", "webhooks", "worker", "reconciler"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if ("os.environ" in text or "getenv" in text) and path != ROOT / "subsync" / "config.py":
                readers.append(str(path.relative_to(ROOT)))
    assert readers == []


# Every table and view schema.sql creates.
TABLES = tuple(
    re.findall(
        r"^CREATE (?:TABLE IF NOT EXISTS|OR REPLACE VIEW) (\w+)", (ROOT / "schema.sql").read_text(), re.MULTILINE
    )
)


def test_each_tables_sql_lives_in_the_store():
    # A table's name in a SQL verb's company, outside subsync/store, is a statement in the wrong room.
    verbs = ("FROM ", "INTO ", "UPDATE ", "JOIN ")
    found = []
    for package in ("subsync", "webhooks", "worker", "reconciler"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "subsync" / "store"):
                continue
            text = path.read_text()
            found += [f"{path.relative_to(ROOT)}: {verb}{t}" for t in TABLES for verb in verbs if f"{verb}{t}" in text]
    assert found == []


def test_the_store_names_the_module_of_every_table():
    described = (ROOT / "subsync" / "store" / "__init__.py").read_text()
    assert len(TABLES) > 10
    assert [t for t in TABLES if f"`{t}`" not in described] == []
