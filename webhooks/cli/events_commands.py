"""`flask --app webhooks events list|show|replay`: find failed events, see why, queue them again.

Typical night:

    flask --app webhooks events list --status failed
    flask --app webhooks events show evt_1Q...           # the full error
    ... fix the cause (deploy, migration) ...
    flask --app webhooks events replay --status failed --since 2h --dry-run
    flask --app webhooks events replay --status failed --since 2h
    flask --app webhooks events list --status failed     # empty once applied
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from flask.cli import AppGroup

from subsync.envelope import InvalidPayload, loads
from subsync.store import event_queries, state_queries
from subsync.store import events as event_store
from webhooks import services
from webhooks.cli.output import (
    TIME,
    cut,
    database,
    echo_json,
    fields,
    fmt_time,
    operator,
    printable,
    table,
    to_json,
)

EVENTS_HELP = """Stored Stripe events: list, inspect, replay.

\b
Failed events, step by step:
  events list --status failed                   which, and the start of why
  events show EVENT_ID                          the full error, what it changed
  (fix the cause: roll back the migration, deploy the fix)
  events replay --status failed --since 6h --dry-run
  events replay --status failed --since 6h      queue them again
  events list --status failed                   empty once applied

TIME options take ISO 8601 (2026-11-01, 2026-11-01T03:00Z; no zone means UTC)
or an age: 30m, 2h, 7d. Event times are when we received them. Statuses:
received, processing, processed, ignored (a type we do not handle), failed.
"""

events = AppGroup("events", help=EVENTS_HELP, short_help="Stored Stripe events: list, inspect, replay.")

ERROR_WIDTH = 60
DEFAULT_LIMIT = 50
# More events than this get a progress bar (on stderr) while they are queued.
PROGRESS_OVER = 100
SEND_CHUNK = 100

LIST_COLUMNS = (
    ("id", "id"),
    ("type", "type"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("received_at", "received"),
    ("error", "last error"),
)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """An event row as shown by list --json and show --json (no payload)."""
    return {k: row[k] for k in row if k not in ("payload", "payload_text")}


def _payload(row: dict[str, Any]) -> tuple[Any, str | None]:
    """The stored payload, parsed; or None and why not (a row stored before the receiver refused such bodies)."""
    try:
        return loads(row["payload_text"]), None
    except InvalidPayload as exc:
        return None, str(exc)


@events.command("list")
@click.option("--status", type=click.Choice(event_store.STATUSES), help="Only events in this status.")
@click.option("--type", "type_", metavar="TYPE", help="Event type, or a prefix ending in * (invoice.*).")
@click.option("--since", type=TIME, help="Received at or after TIME (e.g. 2h, 2026-11-01T03:00Z).")
@click.option("--until", type=TIME, help="Received before TIME.")
@click.option("--object", "object_id", metavar="ID", help="Only events about this Stripe object (sub_..., in_...).")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help="At most N events.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (a list) instead of a table.")
def list_command(
    *,
    status: str | None,
    type_: str | None,
    since: datetime | None,
    until: datetime | None,
    object_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored events, newest first.

    The table cuts the last error short; `events show EVENT_ID` prints it whole.
    """
    f = event_queries.EventFilter(status=status, type=type_, since=since, until=until, object_id=object_id)
    with database() as conn:
        rows = event_queries.list_events(conn, f, limit)
    if as_json:
        echo_json([_summary(r) for r in rows])
        return
    if not rows:
        click.echo("no events match", err=True)
        return
    shown = [{**r, "error": cut(r["last_error"], ERROR_WIDTH)} for r in rows]
    click.echo(table(shown, LIST_COLUMNS))
    if len(rows) == limit:
        click.echo(f"(first {limit}; --limit N for more)", err=True)


def _changes_text(change: dict[str, Any]) -> str:
    before = change["before"] or {}
    after = change["after"] or {}
    if not before:
        shown = {k: v for k, v in after.items() if k != "id" and v not in (None, False, {}, "")}
        return "created: " + ", ".join(f"{k}={_value(v)}" for k, v in shown.items())
    return ", ".join(f"{k}: {_value(before.get(k))} -> {_value(v)}" for k, v in after.items())


def _value(value: Any) -> str:
    return "null" if value is None else str(value)


def change_lines(changes: Sequence[dict[str, Any]], *, with_subscription: bool) -> list[str]:
    lines = []
    for c in changes:
        who = f"{c['source']} {c['source_id'] or ''}".strip()
        where = f"{c['subscription_id']}  " if with_subscription else ""
        lines.append(printable(f"  {fmt_time(c['changed_at'])}  {where}[{who}]  {_changes_text(c)}", None))
    return lines


@events.command("show", short_help="One event in full: error, object, what it changed, replays.")
@click.argument("event_id")
@click.option("--payload", is_flag=True, help="Also print the event's JSON body as received.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (payload included).")
def show_command(event_id: str, payload: bool, as_json: bool) -> None:
    """One event: status, attempts, the object it concerns, the full last error, what it changed."""
    with database() as conn:
        row = event_queries.get_event(conn, event_id)
        if row is None:
            raise click.ClickException(f"no event {event_id}")
        changes = state_queries.changes_by_source(conn, event_id)
        payments = state_queries.payments_of_event(conn, event_id)
        replays = event_queries.replays_of(conn, event_id)
    body, unreadable = _payload(row)
    data = body.get("data") if isinstance(body, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    obj = obj if isinstance(obj, dict) else {}
    concerns = {"object": obj.get("object"), "id": row["object_id"]}
    if as_json:
        echo_json(
            {
                "event": _summary(row),
                "object": concerns,
                "last_error": row["last_error"],
                "changes": changes,
                "payments": payments,
                "replays": replays,
                "payload": body,
                "payload_unreadable": unreadable,
            }
        )
        return
    replayed = row["replays"]
    attempts = f"{row['attempts']}" + (f" (replayed {replayed} time{'s' if replayed != 1 else ''})" if replayed else "")
    click.echo(
        fields(
            [
                ("event", row["id"]),
                ("type", row["type"]),
                ("status", row["status"]),
                ("attempts", attempts),
                ("object", f"{concerns['object'] or '?'} {concerns['id'] or '-'}"),
                ("created (Stripe)", row["created_at"]),
                ("received", row["received_at"]),
                ("last queued", row["enqueued_at"]),
                ("finished", row["processed_at"]),
                ("api version", row["api_version"]),
                ("livemode", row["livemode"]),
                ("account", row["account"]),
            ]
        )
    )
    if row["last_error"]:
        click.echo("\nlast error:")
        for line in row["last_error"].splitlines() or [""]:
            click.echo(f"  {printable(line, None)}")
    click.echo(f"\nchanges it made ({len(changes)}):")
    click.echo("\n".join(change_lines(changes, with_subscription=True)) or "  none")
    if payments:
        click.echo("\npayment recorded:")
        for p in payments:
            click.echo(f"  {p['status']} {p['amount']} {p['currency'] or ''}  ({p['fact_key']})")
    if replays:
        click.echo("\nreplays:")
        for r in replays:
            click.echo(f"  #{r['id']} {fmt_time(r['requested_at'])} by {r['requested_by']}")
    if unreadable:
        click.echo(f"\npayload: stored, but it cannot be read back: {unreadable}")
    elif payload:
        click.echo("\npayload:")
        click.echo(to_json(body))
    if concerns["object"] == "subscription" and concerns["id"]:
        click.echo(f"\nthe subscription: flask --app webhooks subscriptions show {concerns['id']}", err=True)


def _send(event_ids: list[str], *, progress: bool) -> int:
    """Queue the ids (already committed as `received`); returns how many Redis took."""
    queue = services.current().queue
    if not progress:
        return queue.send(event_ids)
    sent = 0
    with click.progressbar(length=len(event_ids), label="queueing", file=sys.stderr) as bar:
        for start in range(0, len(event_ids), SEND_CHUNK):
            chunk = event_ids[start : start + SEND_CHUNK]
            took = queue.send(chunk)
            sent += took
            bar.update(took)
            if took < len(chunk):
                break
    return sent


@events.command("replay", short_help="Queue events again: by id, or every failed one matching filters.")
@click.argument("event_ids", nargs=-1, metavar="[EVENT_ID]...")
@click.option(
    "--status",
    type=click.Choice(["failed"]),
    help="Replay every event in this status (only 'failed') that matches the other filters.",
)
@click.option("--type", "type_", metavar="TYPE", help="With --status: event type, or a prefix ending in *.")
@click.option("--since", type=TIME, help="With --status: received at or after TIME.")
@click.option("--until", type=TIME, help="With --status: received before TIME.")
@click.option("--dry-run", is_flag=True, help="Print what would be queued; change and record nothing.")
@click.option("--by", "requested_by", metavar="NAME", help="Who asks, for the audit record (default: the OS user).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def replay_command(
    *,
    event_ids: tuple[str, ...],
    status: str | None,
    type_: str | None,
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Queue events again through the normal path, once the cause of their failure is fixed.

    Either name events (any status except one being applied right now), or
    select failed ones with --status failed [--type] [--since] [--until].
    Applying is idempotent: an event already applied changes nothing again.
    Changes a replay makes are recorded with source 'replay', and the replay
    itself in event_replays (who, when, which events). Events still
    'received' need no replay: the outbox sweep queues them within a minute.
    """
    filtered = any(v is not None for v in (status, type_, since, until))
    if event_ids and filtered:
        raise click.UsageError("give event ids, or --status failed with filters, not both")
    if not event_ids and status is None:
        if filtered:
            raise click.UsageError("--type, --since and --until select events only with --status failed")
        raise click.UsageError("give event ids, or --status failed to replay every failed event matching filters")
    who = requested_by or operator()
    skipped: list[str] = []
    with database() as conn:
        if event_ids:
            wanted = list(dict.fromkeys(event_ids))
            known = event_queries.statuses(conn, wanted)
            unknown = [i for i in wanted if i not in known]
            if unknown:
                noun = "event" if len(unknown) == 1 else "events"
                raise click.ClickException(f"no {noun} {', '.join(unknown)}; nothing queued")
            candidates = [i for i in wanted if known[i] != "processing"]
            skipped = [i for i in wanted if known[i] == "processing"]
            filters: dict[str, Any] = {}
        else:
            f = event_queries.EventFilter(status=status, type=type_, since=since, until=until)
            candidates = event_queries.matching_ids(conn, f)
            filters = f.as_dict()
        if dry_run:
            _report(candidates, sent=None, replay_id=None, skipped=skipped, as_json=as_json, dry_run=True)
            return
        reopened = set(
            event_store.reopen(conn, candidates) if event_ids else event_store.reopen_failed(conn, candidates)
        )
        queued = [i for i in candidates if i in reopened]
        skipped += [i for i in candidates if i not in reopened]  # claimed by a worker meanwhile
        replay_id = event_store.record_replay(conn, who, filters, queued) if queued else None
    # Committed: the rows are `received` again; if Redis refuses now, the
    # outbox sweep queues them when it answers.
    sent = _send(queued, progress=len(queued) > PROGRESS_OVER and not as_json)
    _report(queued, sent=sent, replay_id=replay_id, skipped=skipped, as_json=as_json, dry_run=False, by=who)


def _report(
    ids: list[str],
    *,
    sent: int | None,
    replay_id: int | None,
    skipped: list[str],
    as_json: bool,
    dry_run: bool,
    by: str | None = None,
) -> None:
    if as_json:
        doc: dict[str, Any] = {"dry_run": dry_run, "count": len(ids), "event_ids": ids, "skipped": skipped}
        if sent is not None:
            doc.update({"replay_id": replay_id, "requested_by": by, "sent": sent, "left_to_sweep": len(ids) - sent})
        echo_json(doc)
        return
    for event_id in skipped:
        click.echo(f"{printable(event_id)}: being applied right now, not queued again", err=True)
    if dry_run:
        click.echo(f"dry run: would queue {len(ids)} event{'s' if len(ids) != 1 else ''}; nothing changed")
        for event_id in ids:
            click.echo(f"  {printable(event_id)}")
        return
    if not ids:
        click.echo("nothing to replay: no event matches")
        return
    click.echo(f"queued {len(ids)} event{'s' if len(ids) != 1 else ''} for replay (replay #{replay_id} by {by})")
    if sent is not None and sent < len(ids):
        click.echo(
            f"warning: Redis took {sent} of {len(ids)}; the rest are stored as 'received' and the outbox sweep"
            " queues them when Redis answers",
            err=True,
        )
