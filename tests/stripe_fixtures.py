"""Real Stripe payloads for the tests that need them, from a directory named by the environment.

`SUBSYNC_STRIPE_FIXTURES` names a `stripe-fixtures` directory (one folder per
source project, JSON files inside). Without it, `../shared/stripe-fixtures`
beside the repository is used when it exists (the development machines have
it; a user's clone does not). Only the tests marked `needs_fixtures` read
it, and only they skip without it, saying which variable to set (or that
the directory it names does not exist).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

VARIABLE = "SUBSYNC_STRIPE_FIXTURES"
_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "stripe-fixtures"


def fixtures_dir() -> tuple[Path | None, str]:
    """The fixtures directory, or None and why there is none (a skipped test's reason)."""
    named = os.environ.get(VARIABLE, "").strip()
    if named:
        if Path(named).is_dir():
            return Path(named), ""
        return None, f"{VARIABLE}={named}: no such directory"
    if _DEFAULT.is_dir():
        return _DEFAULT, ""
    return None, f"needs real Stripe payloads: set {VARIABLE} to a stripe-fixtures directory"


FIXTURES, REASON = fixtures_dir()
needs_fixtures = pytest.mark.skipif(FIXTURES is None, reason=REASON)


def read(relative: str) -> dict[str, Any]:
    """One fixture file as JSON; a test calling this is marked `needs_fixtures`."""
    assert FIXTURES is not None, REASON
    path = FIXTURES / relative
    assert path.is_file(), f"{path} is missing from {VARIABLE}'s directory"
    return json.loads(path.read_text())


def object_of(document: dict[str, Any]) -> dict[str, Any]:
    """A full event, pay's `data` block, or a bare object -> the object."""
    if isinstance(document.get("data"), dict) and "object" in document["data"]:
        return document["data"]["object"]
    if isinstance(document.get("object"), dict):
        return document["object"]
    return document


def objects_of_kind(kind: str) -> list[Any]:
    """pytest params: every fixture object of `kind`, or one skipped param naming the variable."""
    if FIXTURES is None:
        return [pytest.param(None, marks=needs_fixtures, id="no-fixtures")]
    found = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.name == "fixtures3.json":
            continue
        obj = object_of(json.loads(path.read_text()))
        if obj.get("object") == kind:
            found.append(pytest.param(obj, id=f"{path.parent.name}/{path.name}"))
    assert found, f"no {kind} in {FIXTURES}"
    return found
