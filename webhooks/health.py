"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from subsync import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


def _postgres_state() -> str:
    try:
        with db.pool().connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"down: {type(exc).__name__}"
    return "ok"


def _redis_state() -> str:
    from worker.broker import broker  # noqa: PLC0415

    try:
        broker.client.ping()
    except Exception as exc:  # noqa: BLE001
        return f"down: {type(exc).__name__}"
    return "ok"


@bp.get("/readyz")
def readyz() -> Any:
    components = {"postgresql": _postgres_state(), "redis": _redis_state()}
    ready = all(state == "ok" for state in components.values())
    body = json.dumps({"ready": ready, "components": components})
    return Response(body, status=200 if ready else 503, mimetype="application/json")


@bp.get("/metrics")
def metrics() -> Any:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
