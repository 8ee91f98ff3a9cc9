"""What docs/interface.md says of the code, checked against the code."""

import re
from pathlib import Path
from typing import get_args

from reconciler.report import FIGURES
from subsync.event_types import HANDLED_EVENTS
from subsync.ledger import LedgerStatus

INTERFACE = Path(__file__).parents[2] / "docs" / "interface.md"


def section(title: str) -> str:
    text = INTERFACE.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start:end]


def test_the_events_applied_are_the_ones_the_worker_handles():
    listed = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section("Events applied")))
    listed.discard("v2.core.health.event_generation_failure.resolved")
    assert listed == set(HANDLED_EVENTS)


def test_the_ledger_statuses_are_the_ones_the_code_and_the_schema_know():
    text = INTERFACE.read_text()
    start = text.index("`payments`, the ledger")
    listed = re.findall(r"`([A-Z_]+)`", text[start : text.index("occurred_at`;", start)])
    assert set(listed) == set(get_args(LedgerStatus))
    schema = (INTERFACE.parents[1] / "schema.sql").read_text()
    for status in get_args(LedgerStatus):
        assert schema.count(f"'{status}'") == 2  # the table's CHECK and the one replacing an older one


def test_every_reconciliation_figure_is_documented():
    text = INTERFACE.read_text()
    start = text.index("`reconciliation_runs`:")
    documented = set(re.findall(r"`([a-z_]+)`", text[start : text.index("### Reconciliation", start)]))
    assert set(FIGURES) <= documented
