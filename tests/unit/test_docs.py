"""What docs/interface.md says of the code, checked against the code."""

import re
from pathlib import Path
from typing import get_args

from reconciler.report import FIGURES
from subsync import config
from subsync.event_types import HANDLED_EVENTS
from subsync.ledger import LedgerStatus

ROOT = Path(__file__).parents[2]
INTERFACE = ROOT / "docs" / "interface.md"


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
    schema = (ROOT / "schema.sql").read_text()
    for status in get_args(LedgerStatus):
        assert schema.count(f"'{status}'") == 2  # the table's CHECK and the one replacing an older one


def test_every_reconciliation_figure_is_documented():
    text = INTERFACE.read_text()
    start = text.index("`reconciliation_runs`:")
    documented = set(re.findall(r"`([a-z_]+)`", text[start : text.index("### Reconciliation", start)]))
    assert set(FIGURES) <= documented


class _RecordingEnv(dict):
    """An empty environment that notes every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key, default=None):
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.names.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.names.add(key)
        return super().__contains__(key)


def test_the_environment_table_names_exactly_the_variables_config_reads():
    env = _RecordingEnv()
    config.load(env)
    # Beyond load's mapping, config.py reads (and sets) a few in os.environ
    # itself, by a quoted name or by one of its constants.
    for arg in re.findall(r"os\.environ\.\w+\(([\w\"]+)", (ROOT / "subsync" / "config.py").read_text()):
        env.names.add(arg.strip('"') if arg.startswith('"') else getattr(config, arg))
    text = INTERFACE.read_text()
    start = text.index("## Environment\n")
    table = text[start : text.index("\n## ", start)]
    first_cells = re.findall(r"^\| (.+?) \|", table, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert documented == env.names
