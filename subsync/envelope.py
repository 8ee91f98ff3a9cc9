"""The Stripe event envelope: whether a body is a Stripe event we can store and read back, and its columns.

`read_event` is the one door: the receiver calls it on every signed body,
the backfill on every event it lists, the worker on every payload it reads
back. A body it refuses can never be stored (PostgreSQL would reject it, so
Stripe would retry it for days) or never be read back (it would fail every
attempt to apply it): NUL characters, lone surrogates, non-finite numbers,
numbers PostgreSQL or Python cannot hold, a fraction or an exponent longer
than `MAX_NUMBER_CHARS` as sent or as PostgreSQL writes it back, nesting
deeper than `MAX_DEPTH`, identifiers longer than `MAX_ID_CHARS`, a
`created` time before Stripe existed or in the future. The reason it gives
is one line that quotes nothing of the body.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from subsync.logs import Loggable

# Far deeper than any Stripe payload (about a dozen levels), far shallower
# than what makes Python's decoder or PostgreSQL's run out of stack.
MAX_DEPTH = 256
# Stripe's ids are a few dozen characters; an index entry must stay small.
MAX_ID_CHARS = 255
# A number with a fraction or an exponent is stored by PostgreSQL as a
# numeric and given back written out in full, never with an exponent (1e-70
# comes back as 0.000...01, 72 characters). Such a number is refused if it
# is longer than this as sent or as given back: the reader of stored
# payloads is this module too, and a number it refuses there would fail the
# event for ever.
MAX_NUMBER_CHARS = 64
_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?")
# Stripe's first events; nothing real is older.
EARLIEST_CREATED = 1_293_840_000  # 2011-01-01T00:00:00Z
# Characters PostgreSQL's text and jsonb refuse: NUL, and halves of a
# surrogate pair that are not part of a pair (a decoded pair is one character).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The only escapes that decode to one of them: \u0000 and \uD800-\uDFFF (a
# pair, which decodes to one storable character, matches too). Also matched
# after an escaped backslash, where it is plain text: then the decoded
# strings are searched, which tells.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


# A thin event (an event destination's thin payload, Stripe's v2 events):
# no snapshot, a pointer to the object it is about.
THIN_OBJECT = "v2.core.event"


class InvalidPayload(Loggable, ValueError):
    """The body is not a Stripe event we can store and read back; the message says why, in one line."""


@dataclass(frozen=True)
class EventHeader:
    """The columns we index an event by, parsed once from its JSON."""

    id: str
    type: str
    api_version: str | None
    livemode: bool
    account: str | None
    created: int
    object_id: str | None
    thin: bool = False  # a thin event: the object is fetched from Stripe's API when applied


def numeric_chars(text: str) -> int:
    """How long PostgreSQL's numeric output writes the JSON number `text`: in full, with no exponent."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        msg = "a number is not a JSON number"
        raise InvalidPayload(msg)
    sign, whole, fraction, exponent = match.groups()
    fraction = fraction or ""
    shift = int(exponent or 0)
    digits = whole + fraction
    significant = digits.lstrip("0")
    if not significant:  # zero: numeric has no negative zero
        whole_chars, sign = 1, ""
    else:
        # The point moves `shift` places right; leading zeros are dropped.
        whole_chars = max(1, len(whole) + shift - (len(digits) - len(significant)))
    scale = max(0, len(fraction) - shift)
    return len(sign) + whole_chars + (1 + scale if scale else 0)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > MAX_NUMBER_CHARS or numeric_chars(text) > MAX_NUMBER_CHARS:
        msg = f"a number is too large or longer than {MAX_NUMBER_CHARS} characters written out in full"
        raise InvalidPayload(msg)
    return value


def _constant(name: str) -> Any:
    msg = f"{name} is not a number JSON or PostgreSQL can store"
    raise InvalidPayload(msg)


# Built once: json.loads with hooks builds a decoder on every call.
_DECODER = json.JSONDecoder(parse_float=_float, parse_constant=_constant)


def loads(text: str) -> Any:
    """`json.loads`, refusing what PostgreSQL's jsonb could not store or Python could not read back."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        msg = f"the JSON is nested deeper than {MAX_DEPTH} levels"
        raise InvalidPayload(msg) from None
    except json.JSONDecodeError as exc:
        msg = f"the body is not JSON ({exc.msg} at character {exc.pos})"
        raise InvalidPayload(msg) from None
    except ValueError as exc:
        if isinstance(exc, InvalidPayload):
            raise
        # int() refuses literals of more digits than Python reads back.
        msg = "a number is too long to store and read back"
        raise InvalidPayload(msg) from None
    # Only deep documents have many brackets: counting them is far cheaper
    # than walking every payload.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        msg = f"the JSON is nested deeper than {MAX_DEPTH} levels"
        raise InvalidPayload(msg)
    # NUL and lone surrogates can only come from \u escapes: JSON forbids raw
    # control characters in strings, and UTF-8 cannot encode a surrogate.
    if _UNSTORABLE_ESCAPE.search(text) and _has_unstorable_text(value):
        msg = "a string holds a NUL character or a lone surrogate, which PostgreSQL cannot store"
        raise InvalidPayload(msg)
    return value


def _children(node: Any) -> Any:
    if isinstance(node, dict):
        return node.values()
    return node if isinstance(node, list) else ()


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in _children(node) if isinstance(child, dict | list))
    return deepest


def _has_unstorable_text(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _UNSTORABLE.search(node):
                return True
        elif isinstance(node, dict):
            if any(_UNSTORABLE.search(key) for key in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _required_text(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        msg = f"the event has no string {name!r}"
        raise InvalidPayload(msg)
    if len(value) > MAX_ID_CHARS:
        msg = f"the event's {name!r} is longer than {MAX_ID_CHARS} characters"
        raise InvalidPayload(msg)
    return value


def _optional_text(event: Mapping[str, Any], name: str) -> str | None:
    return None if event.get(name) is None else _required_text(event, name)


def _check_created(created: int, tolerance_s: int, now: float | None) -> None:
    latest = (time.time() if now is None else now) + tolerance_s
    if not EARLIEST_CREATED <= created <= latest:
        msg = "the event's 'created' is before 2011 or in the future"
        raise InvalidPayload(msg)


def _iso_seconds(value: Any) -> int:
    """A thin event's `created` (ISO 8601, e.g. 2026-11-20T03:04:05.000Z) in unix seconds."""
    if not isinstance(value, str):
        msg = "the thin event has no ISO 8601 'created'"
        raise InvalidPayload(msg)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        msg = "the thin event's 'created' is not ISO 8601"
        raise InvalidPayload(msg) from None
    if parsed.tzinfo is None:
        msg = "the thin event's 'created' has no time zone"
        raise InvalidPayload(msg)
    return int(parsed.timestamp())


def _parse_thin(event: dict[str, Any], tolerance_s: int, now: float | None) -> EventHeader:
    """A thin event: `type`, ISO `created`, `related_object` {id, type, url}, `context` (the connected account)."""
    event_id = _required_text(event, "id")
    event_type = _required_text(event, "type")
    created = _iso_seconds(event.get("created"))
    _check_created(created, tolerance_s, now)
    related = event.get("related_object")
    if related is not None and not isinstance(related, dict):
        msg = "the thin event's 'related_object' is not an object"
        raise InvalidPayload(msg)
    object_id = related.get("id") if related is not None else None
    if object_id is not None and (not isinstance(object_id, str) or len(object_id) > MAX_ID_CHARS):
        msg = f"the thin event's 'related_object.id' is not a string of at most {MAX_ID_CHARS} characters"
        raise InvalidPayload(msg)
    return EventHeader(
        id=event_id,
        type=event_type,
        api_version=None,
        livemode=event.get("livemode") is True,
        account=_optional_text(event, "context"),
        created=created,
        object_id=object_id,
        thin=True,
    )


def parse_event(event: Any, *, tolerance_s: int = 0, now: float | None = None) -> EventHeader:
    """Check that `event` (parsed JSON) has a Stripe event's shape, with storable columns.

    `created` must lie between Stripe's first events and `now` plus
    `tolerance_s` (the signature's tolerance): a time in the future would
    move an object's watermark past every real event to come. A thin event
    (`"object": "v2.core.event"`) has its own shape (`_parse_thin`).
    """
    if not isinstance(event, dict):
        msg = "the body is not a JSON object"
        raise InvalidPayload(msg)
    if event.get("object") == THIN_OBJECT:
        return _parse_thin(event, tolerance_s, now)
    event_id = _required_text(event, "id")
    event_type = _required_text(event, "type")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        msg = "the event has no 'data.object'"
        raise InvalidPayload(msg)
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        msg = "the event has no integer 'created'"
        raise InvalidPayload(msg)
    _check_created(created, tolerance_s, now)
    obj_id = data["object"].get("id")
    if isinstance(obj_id, str) and len(obj_id) > MAX_ID_CHARS:
        msg = f"the event's 'data.object.id' is longer than {MAX_ID_CHARS} characters"
        raise InvalidPayload(msg)
    api_version = event.get("api_version")
    return EventHeader(
        id=event_id,
        type=event_type,
        api_version=api_version if isinstance(api_version, str) and len(api_version) <= MAX_ID_CHARS else None,
        livemode=event.get("livemode") is True,
        account=_optional_text(event, "account"),
        created=created,
        object_id=obj_id if isinstance(obj_id, str) else None,
    )


def read_event(text: str, *, tolerance_s: int = 0, now: float | None = None) -> tuple[dict[str, Any], EventHeader]:
    """The event in `text` and its columns; InvalidPayload (one line, why) if it cannot be stored or read back."""
    event = loads(text)
    return event, parse_event(event, tolerance_s=tolerance_s, now=now)


def payload_text(event: Mapping[str, Any]) -> str:
    """Serialise an event fetched from Stripe's API for `insert`."""
    return json.dumps(event, separators=(",", ":"))
