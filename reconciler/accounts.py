"""Which Stripe accounts a reconciliation or a backfill covers: the platform's own, and connected ones.

An object of a connected account (Connect) exists only on that account: it
is listed, retrieved and reconciled there, with `Stripe-Account`. A run
covers the platform and every connected account we hold anything of, or one
account an operator names.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from subsync.store import subscriptions

# Every account: the platform's own, then each connected account we hold anything of.
ALL_ACCOUNTS = "all"
# The platform's own objects: the key of their figures in a report, and the CLI's word for them.
PLATFORM = "platform"


def in_scope(pool: ConnectionPool[Any], account: str | None) -> list[str | None]:
    """The accounts a run covers: the one named (None: the platform), or every one for ALL_ACCOUNTS."""
    if account != ALL_ACCOUNTS:
        return [account]
    with pool.connection() as conn:
        return [None, *subscriptions.connected_accounts(conn)]


def key(account: str | None) -> str:
    """An account as a report names it."""
    return account or PLATFORM
