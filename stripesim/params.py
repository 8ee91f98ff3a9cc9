"""Requests and responses of the ``/v1`` API: Stripe's bracket encoding, typed fields, the request's account, JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, g, request

from .model import SimError

JSON = dict[str, Any]
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class _Indexed(dict[str, Any]):
    """``items[0][price]``-style members, keyed by index until they become a list."""


def parse_params(pairs: list[tuple[str, list[str]]]) -> JSON:
    """Decode Stripe's bracket encoding.

    ``types[0]=a``, ``types[]=a`` -> a list; ``created[gte]=1``, ``metadata[k]=v``
    -> a dict; deeper keys nest, ``items[0][price]=p&items[0][quantity]=2`` ->
    ``{"items": [{"price": "p", "quantity": "2"}]}`` (lists in index order).
    """
    out: JSON = {}
    for key, values in pairs:
        name, bracket, _ = key.partition("[")
        parts = _SEGMENT.findall(key[len(name) :]) if bracket else []
        if not parts or "".join(f"[{p}]" for p in parts) != key[len(name) :]:
            out[key] = values[-1]
            continue
        inner = parts[0]
        if len(parts) == 1:
            if inner == "" or inner.isdigit():
                out.setdefault(name, []).extend(values)
            else:
                out.setdefault(name, {})[inner] = values[-1]
            continue
        node = out.setdefault(name, _Indexed() if inner.isdigit() else {})
        if not isinstance(node, dict):
            continue  # a list given both ways: keep the first form
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = values[-1]
    return {k: _lists(v) for k, v in out.items()}


def _lists(value: Any) -> Any:
    if isinstance(value, _Indexed):
        return [_lists(value[k]) for k in sorted(value, key=int) if k.isdigit()]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def request_params() -> JSON:
    pairs = list(request.args.lists())
    if request.method in ("POST", "DELETE") and request.form:
        pairs += list(request.form.lists())
    return parse_params(pairs)


def request_account() -> str | None:
    """The connected account the request acts for (``Stripe-Account``), None for the platform."""
    account: str | None = g.get("stripe_account")
    return account


def request_context_account() -> str | None:
    """The connected account a ``/v2`` request acts for: its ``Stripe-Context``, None for the platform.

    Stripe's v2 API is told another account by ``Stripe-Context``; a
    ``Stripe-Account`` there selects nothing.
    """
    account: str | None = g.get("stripe_context_account")
    return account


def int_param(params: JSON, name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SimError(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name) from None


def created_param(params: JSON) -> dict[str, int] | None:
    value = params.get("created")
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return {k: int(v) for k, v in value.items()}
        except ValueError:
            raise SimError("Invalid integer in created", param="created") from None
    try:
        return {"eq": int(value)}
    except (TypeError, ValueError):
        raise SimError(f"Invalid integer: {value}", param="created") from None


def bool_param(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1", "yes")


def cursors(params: JSON) -> JSON:
    """``limit``, ``starting_after`` and ``ending_before`` of a list request."""
    return {
        "limit": int_param(params, "limit"),
        "starting_after": params.get("starting_after") or None,
        "ending_before": params.get("ending_before") or None,
    }


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json")
