"""All configuration, read once from the environment (see README, Configuration)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

DEFAULT_DATABASE_URL = "postgresql://root@127.0.0.1:5432/subsync"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    webhook_secrets: tuple[str, ...]
    webhook_tolerance_s: int
    stripe_api_key: str | None
    stripe_api_base: str | None
    grace_period: timedelta
    reconcile_cron: str
    max_body_bytes: int
    log_format: str
    # Ours: the Dramatiq namespace (Redis key prefix). Tests give each run its
    # own so that runs on one Redis never see each other's messages.
    queue_namespace: str

    def require_webhook_secrets(self) -> tuple[str, ...]:
        if not self.webhook_secrets:
            msg = "STRIPE_WEBHOOK_SECRET is not set: give one or more whsec_... secrets, comma-separated"
            raise ConfigError(msg)
        return self.webhook_secrets

    def require_stripe_api_key(self) -> str:
        if not self.stripe_api_key:
            msg = "STRIPE_API_KEY is not set: the reconciler, backfill and fetch need a secret or restricted key"
            raise ConfigError(msg)
        return self.stripe_api_key


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        msg = f"{name} must be a whole number, got {raw!r}"
        raise ConfigError(msg) from None
    if value < 0:
        msg = f"{name} must not be negative, got {value}"
        raise ConfigError(msg)
    return value


def load(env: dict[str, str] | None = None) -> Settings:
    """Read the settings from `env` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    secrets = tuple(s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip())
    log_format = env.get("LOG_FORMAT", "json").strip() or "json"
    if log_format not in ("json", "console"):
        msg = f"LOG_FORMAT must be 'json' or 'console', got {log_format!r}"
        raise ConfigError(msg)
    return Settings(
        database_url=env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
        redis_url=env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL,
        webhook_secrets=secrets,
        webhook_tolerance_s=_int(env, "STRIPE_WEBHOOK_TOLERANCE", 300),
        stripe_api_key=env.get("STRIPE_API_KEY", "").strip() or None,
        stripe_api_base=env.get("STRIPE_API_BASE", "").strip() or None,
        grace_period=timedelta(hours=_int(env, "GRACE_PERIOD_HOURS", 72)),
        reconcile_cron=env.get("RECONCILE_CRON", "").strip() or "0 3 * * *",
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576),
        log_format=log_format,
        queue_namespace=env.get("QUEUE_NAMESPACE", "").strip() or "subsync",
    )
