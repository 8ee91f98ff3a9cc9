"""What a reconciliation run found and did: each account's figures, the run's report, what every pass shares.

A pass (subscriptions, invoices, entitlements, refunds and disputes) reads one account's objects from
Stripe, compares them with ours, repairs, and counts into that account's
`Figures`; the run adds every account's into the report's totals, which
are the columns of `reconciliation_runs`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from reconciler.bulk import BulkWrites
from subsync import drift
from subsync.store.jobs import RunStatus

__all__ = ["FIGURES", "MAX_LISTED", "AccountRun", "Figures", "Report", "note_verdict"]

# How many changes a report lists; the counts are always complete.
MAX_LISTED = 1000


@dataclass
class Figures:
    """What one account's part of a run found and did."""

    scanned: int = 0
    drifted: int = 0
    fixed: int = 0
    created: int = 0
    missing_in_stripe: int = 0
    left_alone_newer: int = 0
    terminal_here: int = 0
    invoices_scanned: int = 0
    invoices_drifted: int = 0
    invoices_fixed: int = 0
    invoices_missing: int = 0  # draft or open here, unknown to Stripe (a draft deleted there)
    ledger_added: int = 0
    entitlements_scanned: int = 0  # customers whose active entitlements were listed and compared
    entitlements_drifted: int = 0
    entitlements_fixed: int = 0
    entitlements_skipped: int = 0  # customers not asked about: their account has no feature at all
    refunds_scanned: int = 0  # refunds Stripe listed as created in the window
    ledger_refunds_added: int = 0  # succeeded refunds the ledger lacked, recorded
    disputes_scanned: int = 0
    ledger_disputes_added: int = 0  # dispute openings and outcomes the ledger lacked, recorded
    accounts_failed: int = 0  # connected accounts Stripe refused us (revoked, unknown): not or partly reconciled


FIGURES = tuple(f.name for f in dataclasses.fields(Figures))


@dataclass
class Report(Figures):
    """A run: its figures (the totals over every account), each account's own, and what changed."""

    run_id: int | None = None
    dry_run: bool = False
    status: RunStatus = "running"
    error: str | None = None
    accounts: dict[str, Figures] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)  # subscriptions'
    invoice_changes: list[dict[str, Any]] = field(default_factory=list)
    entitlement_changes: list[dict[str, Any]] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    missing_invoice_ids: list[str] = field(default_factory=list)
    terminal_ids: list[str] = field(default_factory=list)
    account_errors: dict[str, str] = field(default_factory=dict)  # why an account's passes stopped

    def add(self, figures: Figures) -> None:
        for name in FIGURES:
            setattr(self, name, getattr(self, name) + getattr(figures, name))

    def totals(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIGURES}

    def note(self, change: dict[str, Any]) -> None:
        if "invoice_id" in change:
            listed = self.invoice_changes
        elif "customer_id" in change:
            listed = self.entitlement_changes
        else:
            listed = self.changes
        if len(listed) < MAX_LISTED:
            listed.append(change)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "status": self.status,
            "error": self.error,
            **self.totals(),
            "accounts": {
                key: {**dataclasses.asdict(figures), "error": self.account_errors.get(key)}
                for key, figures in self.accounts.items()
            },
            "changes": self.changes,
            "invoice_changes": self.invoice_changes,
            "entitlement_changes": self.entitlement_changes,
            "missing_ids": self.missing_ids,
            "missing_invoice_ids": self.missing_invoice_ids,
            "terminal_ids": self.terminal_ids,
        }


@dataclass
class AccountRun:
    """What every pass over one account's objects needs: where to write, what to count, whose objects."""

    pool: ConnectionPool[Any]
    report: Report
    figures: Figures
    account: str | None
    grace: timedelta
    bulk: BulkWrites

    @property
    def source_id(self) -> str:
        return str(self.report.run_id)


def note_verdict(
    run: AccountRun,
    verdict: drift.Verdict,
    id_name: str,
    object_id: str,
    *,
    created: str = "created",
    drifted: str = "drifted",
    **extra: Any,
) -> bool:
    """Count and list one object's verdict into the figures named; True when it is to be repaired.

    `created`/`drifted` name the figures a new or drifted object counts in
    (a subscription's by default; an invoice counts both as invoices_drifted).
    Left alone and terminal here are counted alike for every kind of object.
    """
    figures = run.figures
    if verdict.kind == "newer_here":
        figures.left_alone_newer += 1
        return False
    if verdict.kind == "terminal_here":
        figures.terminal_here += 1
        if len(run.report.terminal_ids) < MAX_LISTED:
            run.report.terminal_ids.append(object_id)
        run.report.note({id_name: object_id, "account": run.account, "kind": "terminal_here", **extra})
        return False
    if verdict.kind == "same":
        return False
    name = created if verdict.kind == "created" else drifted
    setattr(figures, name, getattr(figures, name) + 1)
    run.report.note(
        {id_name: object_id, "account": run.account, "new": verdict.kind == "created", "changes": verdict.changes}
    )
    return True
