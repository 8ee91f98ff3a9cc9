"""How an application follows subsync's access feed: every change, in order, exactly once.

`access_changes` holds every change of a subscription's access, its ids
handed out in commit order. Read the rows after the last id you processed,
and wait for `NOTIFY subscription_access` when there are none: a change made
while you were down is read when you start again, one made while you read
wakes you. Store the last id in the same transaction as what you do with the
change, so that a crash between the two never repeats or loses one.

Run it: `python docs/examples/access_feed.py postgresql://root@127.0.0.1:5432/subsync`
(prints each change; its cursor is kept in a table of its own, app_access_cursor).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

CURSOR_TABLE = """
CREATE TABLE IF NOT EXISTS app_access_cursor (name text PRIMARY KEY, last_id bigint NOT NULL)
"""


def follow(
    database_url: str,
    handle: Callable[[psycopg.Connection[Any], dict[str, Any]], None],
    *,
    name: str = "app",
    stop: Callable[[], bool] = lambda: False,
    wait_s: float = 5.0,
) -> None:
    """Call `handle(conn, change)` for each access change after this reader's last one, until `stop()`.

    `handle` runs inside the transaction that moves the cursor past its change.
    """
    with (
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as listen,
        psycopg.connect(database_url, row_factory=dict_row) as work,
    ):
        listen.execute("LISTEN subscription_access")  # before the first read: nothing falls between
        with work.transaction():
            work.execute(CURSOR_TABLE)
            work.execute("INSERT INTO app_access_cursor (name, last_id) VALUES (%s, 0) ON CONFLICT DO NOTHING", (name,))
        while not stop():
            with work.transaction():
                last_id = work.execute(
                    "SELECT last_id FROM app_access_cursor WHERE name = %s FOR UPDATE", (name,)
                ).fetchone()["last_id"]
                changes = work.execute(
                    "SELECT * FROM access_changes WHERE id > %s ORDER BY id LIMIT 500", (last_id,)
                ).fetchall()
                for change in changes:
                    handle(work, change)
                if changes:
                    work.execute("UPDATE app_access_cursor SET last_id = %s WHERE name = %s", (changes[-1]["id"], name))
            if not changes:
                for _ in listen.notifies(timeout=wait_s, stop_after=1):
                    pass


def main() -> None:
    def show(_conn: psycopg.Connection[Any], change: dict[str, Any]) -> None:
        moved = f"{change['from_access']} -> {change['to_access']}"
        print(f"#{change['id']} {change['customer_id']} {change['subscription_id']}: {moved}")  # noqa: T201

    follow(sys.argv[1], show)


if __name__ == "__main__":
    main()
