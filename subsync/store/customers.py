"""The `customers` table: one row per Stripe customer, from customer.* events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from subsync.stripe_objects import CustomerSnapshot


def apply_customer_snapshot(conn: psycopg.Connection[Any], snapshot: CustomerSnapshot, seen_at: datetime) -> bool:
    """Upsert a customer; an older snapshot never overwrites, and deletion is final."""
    row = conn.execute(
        """
        INSERT INTO customers (id, email, name, metadata, deleted, stripe_updated_at, account)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (id) DO UPDATE
           SET email = EXCLUDED.email, name = EXCLUDED.name, metadata = EXCLUDED.metadata,
               deleted = customers.deleted OR EXCLUDED.deleted, account = EXCLUDED.account,
               stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE customers.stripe_updated_at <= EXCLUDED.stripe_updated_at OR EXCLUDED.deleted
        RETURNING 1
        """,
        (
            snapshot.id,
            snapshot.email,
            snapshot.name,
            Jsonb(snapshot.metadata or {}),
            snapshot.deleted,
            seen_at,
            snapshot.account,
        ),
    ).fetchone()
    return row is not None
