"""Idempotent requests: an ``Idempotency-Key`` on a ``POST /v1/...`` replays the first response for that key.

As Stripe does: the first request's status and body are saved once its
endpoint starts executing (a request refused for its parameters, an unknown
URL or a rejected key saves nothing) and a later request with the same key
and the same endpoint and parameters gets them back, errors included, with
``Idempotent-Replayed: true``. The same key with other parameters is a 400
``idempotency_error``; while the first request is still running, a 409
``idempotency_key_in_use``. Keys are per account (``Stripe-Account``) and
forgotten 24 hours (simulated) after their first use. Events an idempotent
request causes carry its key in ``request.idempotency_key``.

The official libraries send a fresh key with every POST (and the same one
when they retry it), so every POST is recorded.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import Flask, Response, g, request

from .model import DAY, SimError
from .params import json_response, request_account, request_params
from .state import Simulator

KEY_TTL = DAY
# parameter errors: the endpoint never started, so nothing is saved
UNSAVED_CODES = frozenset(
    {
        "parameter_missing",
        "parameter_unknown",
        "parameter_invalid",
        "parameter_invalid_integer",
        "parameter_invalid_empty",
    }
)

Scope = tuple[str | None, str]  # (account, key)


@dataclass(slots=True)
class Saved:
    fingerprint: str
    created: int
    status: int | None = None  # None while the first request runs
    body: bytes = b""
    mimetype: str = "application/json"


class IdempotencyStore:
    """Saved responses by (account, key), oldest first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.saved: OrderedDict[Scope, Saved] = OrderedDict()

    def begin(self, scope: Scope, fingerprint: str, now: int) -> Response | None:
        """None: run the request (and save it); else the response to give instead."""
        with self.lock:
            while self.saved:
                oldest = next(iter(self.saved.values()))
                if oldest.created > now - KEY_TTL:
                    break
                self.saved.popitem(last=False)
            entry = self.saved.get(scope)
            if entry is None:
                self.saved[scope] = Saved(fingerprint, now)
                return None
            if entry.fingerprint != fingerprint:
                return _error(
                    SimError(
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{scope[1]}' if you meant to execute a different "
                        "request.",
                        type="idempotency_error",
                    )
                )
            if entry.status is None:
                return _error(
                    SimError(
                        "There is currently another in-progress request using this Idempotent Key (that probably "
                        "means you submitted twice, and the other request is still going through): "
                        f"{scope[1]}. Please try again later.",
                        status=409,
                        type="idempotency_error",
                        code="idempotency_key_in_use",
                    )
                )
            replay = Response(entry.body, status=entry.status, mimetype=entry.mimetype)
            replay.headers["Idempotent-Replayed"] = "true"
            return replay

    def finish(self, scope: Scope, resp: Response) -> None:
        with self.lock:
            entry = self.saved.get(scope)
            if entry is not None:
                entry.status = resp.status_code
                entry.body = resp.get_data()
                entry.mimetype = resp.mimetype or "application/json"

    def abandon(self, scope: Scope) -> None:
        with self.lock:
            entry = self.saved.get(scope)
            if entry is not None and entry.status is None:
                del self.saved[scope]


def _error(err: SimError) -> Response:
    return json_response(err.body(), err.status)


def _saves(resp: Response) -> bool:
    """Whether Stripe keeps this response for the key: not when the endpoint never ran."""
    if request.url_rule is None or resp.status_code in (401, 403, 409, 429):
        return False
    if resp.status_code == 400:
        try:
            code = json.loads(resp.get_data()).get("error", {}).get("code")
        except (ValueError, AttributeError):
            return True
        return code not in UNSAVED_CODES
    return True


def register_idempotency(app: Flask, sim: Simulator) -> IdempotencyStore:
    """Idempotency for every ``POST /v1/...`` of ``app`` (call after the key and account checks are registered)."""
    store = IdempotencyStore()

    @app.before_request
    def _replay_or_record() -> Response | None:
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return None
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return None
        scope: Scope = (request_account(), key)
        fingerprint = json.dumps([request.path, request_params()], sort_keys=True)
        answer = store.begin(scope, fingerprint, sim.now())
        if answer is None:
            g.idempotency_scope = scope
            sim._http_request.idempotency_key = key
        return answer

    @app.after_request
    def _save(resp: Response) -> Response:
        scope = g.pop("idempotency_scope", None)
        if scope is not None:
            if _saves(resp):
                store.finish(scope, resp)
            else:
                store.abandon(scope)
        return resp

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        sim._http_request.idempotency_key = None
        scope = g.pop("idempotency_scope", None)
        if scope is not None:
            store.abandon(scope)

    return store
