"""Helpers every command group shares: the database connection, times, tables, JSON.

- `database()`: a connection from the process's pool; PostgreSQL down or a
  database error becomes one line on stderr and exit 1 (no traceback).
- `TIME`: a click type for `--since/--until`: ISO 8601 (`2026-11-01`,
  `2026-11-01T03:00`, `2026-11-01T03:00:00+02:00`; no zone means UTC) or
  relative to now (`90s`, `30m`, `2h`, `7d`, `2w`).
- `table(rows, columns)`: aligned columns for people; `echo_json(doc)`: one
  JSON document for scripts (times as ISO 8601, UTC).
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import click
import psycopg
import psycopg_pool

from webhooks import services

CONNECT_TIMEOUT_S = 3.0
RELATIVE_TIME = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def one_line(exc: BaseException) -> str:
    """An exception as one short line: psycopg messages span several."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextmanager
def database() -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection, committed when the block ends without an exception."""
    try:
        with services.current().pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
            yield conn
    except psycopg_pool.PoolTimeout:
        raise click.ClickException(f"PostgreSQL: {_why_unreachable()}") from None
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"PostgreSQL: {one_line(exc)}") from None
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {one_line(exc)}") from None


def _why_unreachable() -> str:
    """The pool only says it timed out: one direct attempt tells why."""
    try:
        with psycopg.connect(services.current().settings.database_url, connect_timeout=int(CONNECT_TIMEOUT_S)):
            pass
    except psycopg.Error as exc:
        return f"{one_line(exc)} (check DATABASE_URL)"
    return f"no free connection within {CONNECT_TIMEOUT_S:g} s"


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC when no zone is given) or `<n><s|m|h|d|w>` ago."""
    relative = RELATIVE_TIME.match(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        try:
            return (now or datetime.now(UTC)) - timedelta(**{UNITS[unit]: amount})
        except OverflowError:
            msg = f"{value!r} reaches back before the year 1"
            raise ValueError(msg) from None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        msg = f"{value!r} is not a time: use ISO 8601 (2026-11-01, 2026-11-01T03:00Z) or an age (30m, 2h, 7d)"
        raise ValueError(msg) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TimeType(click.ParamType[datetime, Any]):
    """`--since 2h`, `--since 2026-11-01T03:00Z`: a bad value is bad usage (exit 2)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeType()


def fmt_time(value: datetime | None) -> str:
    """A time for people: UTC, to the second."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cut(text: str | None, width: int) -> str:
    """The start of `text` on one line, at most `width` characters, `…` when cut."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


# Table cells and field values are one line each, and never longer than this:
# an id is data from outside, and a newline in one must not fake a row.
MAX_CELL = 80
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str, width: int | None = MAX_CELL) -> str:
    """`text` with control characters escaped (`\\n`, `\\x1b`), cut to `width` (None: whole) with `…`."""
    escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if width is None or len(escaped) <= width:
        return escaped
    return escaped[: max(width - 1, 0)] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as aligned text; `columns` is (key, header) pairs."""
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`label  value` lines, labels aligned."""
    width = max((len(label) for label, _ in pairs), default=0)
    return "\n".join(f"{label.ljust(width)}  {_cell(value)}" for label, value in pairs)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)


def to_json(document: Any) -> str:
    return json.dumps(document, default=_json_default, indent=2, ensure_ascii=False)


def echo_json(document: Any) -> None:
    """Print one JSON document on stdout, nothing else."""
    click.echo(to_json(document))


def operator() -> str:
    """Who runs the command: the login the environment names, else the account's."""
    named = services.current().settings.operator
    if named:
        return named
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "unknown"
