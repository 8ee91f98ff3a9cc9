"""What docs/interface.md says of the code, checked against the code."""

import re
from pathlib import Path

from subsync.event_types import HANDLED_EVENTS

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
