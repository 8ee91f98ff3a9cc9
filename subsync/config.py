"""All configuration: the one module that reads the environment (README, Configuration).

Each process calls `load()` once at start-up and passes the `Settings` on;
nothing else reads `os.environ`. The few variables that libraries read for
themselves (prometheus_client's PROMETHEUS_MULTIPROC_DIR, Dramatiq's
`dramatiq_prom_db`) are also set here, by `use_metrics_dir`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from subsync.logs import Loggable

DEFAULT_DATABASE_URL = "postgresql://root@127.0.0.1:5432/subsync"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# A request whose body trickles in holds a thread until it is complete
# (granian hands a request to a thread once its headers are in); threads
# blocked that way cost nothing else, so there are enough to outlast many.
DEFAULT_WEB_THREADS = 16
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

LogFormat = Literal["json", "console"]
TRUE_WORDS = ("1", "true", "yes", "on")


class ConfigError(Loggable, Exception):
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
    log_format: LogFormat
    # Ours: the Dramatiq namespace (Redis key prefix). Tests give each run its
    # own so that runs on one Redis never see each other's messages.
    queue_namespace: str
    # The web server's port, processes and threads per process.
    port: int
    web_concurrency: int
    web_threads: int
    # Dramatiq's own worker metrics on :9191 (the `dramatiq` command only).
    dramatiq_prometheus: bool
    # Where prometheus_client keeps the counters of a multi-process server, if set.
    metrics_dir: str | None
    # Who runs a command, for the audit record of a replay.
    operator: str | None
    # The deployment's one mode: True live, False test (the API key's, or STRIPE_MODE); None unknown.
    livemode: bool | None

    def __repr__(self) -> str:
        """Every setting but the secrets: a traceback or a debugger may print it."""
        shown = {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "database_url": redact_url(self.database_url),
            "redis_url": redact_url(self.redis_url),
            "webhook_secrets": f"<{len(self.webhook_secrets)} secrets>",
            "stripe_api_key": None if self.stripe_api_key is None else "<set>",
        }
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def require_webhook_secrets(self) -> tuple[str, ...]:
        if not self.webhook_secrets:
            msg = "STRIPE_WEBHOOK_SECRET is not set: give one or more whsec_... secrets, comma-separated"
            raise ConfigError(msg)
        return self.webhook_secrets

    def require_mode(self) -> bool:
        """True for a live deployment, False for a test one; ConfigError if neither the key nor STRIPE_MODE says."""
        if self.livemode is None:
            msg = "the mode is unknown: set STRIPE_API_KEY (sk_live_/sk_test_...) or STRIPE_MODE=live|test"
            raise ConfigError(msg)
        return self.livemode

    def require_stripe_api_key(self) -> str:
        if not self.stripe_api_key:
            msg = "STRIPE_API_KEY is not set: the reconciler, backfill and fetch need a secret or restricted key"
            raise ConfigError(msg)
        return self.stripe_api_key


def redact_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        msg = f"{name} must be a whole number, got {raw!r}"
        raise ConfigError(msg) from None
    if value < minimum:
        msg = f"{name} must be at least {minimum}, got {value}"
        raise ConfigError(msg)
    return value


_KEY_MODES = {"sk_live_": True, "rk_live_": True, "sk_test_": False, "rk_test_": False}


def key_livemode(key: str | None) -> bool | None:
    """The mode a Stripe key's prefix says (True live, False test), or None."""
    return next((mode for prefix, mode in _KEY_MODES.items() if (key or "").startswith(prefix)), None)


def _livemode(env: Mapping[str, str]) -> bool | None:
    """The mode the API key's prefix says, or STRIPE_MODE; the two must agree."""
    by_key = key_livemode(_text(env, "STRIPE_API_KEY"))
    named = _text(env, "STRIPE_MODE").lower()
    if named not in ("", "live", "test"):
        msg = f"STRIPE_MODE must be 'live' or 'test', got {named!r}"
        raise ConfigError(msg)
    by_setting = None if not named else named == "live"
    if by_key is not None and by_setting is not None and by_key != by_setting:
        msg = f"STRIPE_MODE={named} disagrees with STRIPE_API_KEY, a {'live' if by_key else 'test'} key"
        raise ConfigError(msg)
    return by_key if by_key is not None else by_setting


def _log_format(env: Mapping[str, str]) -> LogFormat:
    value = _text(env, "LOG_FORMAT") or "json"
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    msg = f"LOG_FORMAT must be 'json' or 'console', got {value!r}"
    raise ConfigError(msg)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    secrets = tuple(s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip())
    return Settings(
        database_url=_text(env, "DATABASE_URL") or DEFAULT_DATABASE_URL,
        redis_url=_text(env, "REDIS_URL") or DEFAULT_REDIS_URL,
        webhook_secrets=secrets,
        webhook_tolerance_s=_int(env, "STRIPE_WEBHOOK_TOLERANCE", 300),
        stripe_api_key=_text(env, "STRIPE_API_KEY") or None,
        stripe_api_base=_text(env, "STRIPE_API_BASE") or None,
        grace_period=timedelta(hours=_int(env, "GRACE_PERIOD_HOURS", 72)),
        reconcile_cron=_text(env, "RECONCILE_CRON") or "0 3 * * *",
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576, minimum=1),
        log_format=_log_format(env),
        queue_namespace=_text(env, "QUEUE_NAMESPACE") or "subsync",
        port=_int(env, "PORT", 5000),
        web_concurrency=_int(env, "WEB_CONCURRENCY", os.cpu_count() or 1, minimum=1),
        web_threads=_int(env, "WEB_THREADS", DEFAULT_WEB_THREADS, minimum=1),
        dramatiq_prometheus=_text(env, "DRAMATIQ_PROMETHEUS").lower() in TRUE_WORDS,
        metrics_dir=_text(env, METRICS_DIR_VARIABLE) or None,
        operator=_text(env, "USER") or _text(env, "LOGNAME") or None,
        livemode=_livemode(env),
    )


def use_metrics_dir(path: str | None = None, *, prefix: str = "subsync-prom-") -> str:
    """Point prometheus_client's multi-process mode at `path` (default: a new temporary directory).

    Must run before prometheus_client creates a metric in this process and
    in every process that shares the directory, so it is set in the
    environment, which prometheus_client and the processes forked later read.
    """
    path = path or os.environ.get(METRICS_DIR_VARIABLE) or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(path, exist_ok=True)
    os.environ[METRICS_DIR_VARIABLE] = path
    return path


def use_dramatiq_metrics_dir() -> str:
    """The directory Dramatiq's Prometheus middleware shares between worker processes, also ours.

    Dramatiq reads `dramatiq_prom_db` (default $TMPDIR/dramatiq-prometheus);
    pointing prometheus_client at the same directory puts the worker's own
    counters on Dramatiq's endpoint.
    """
    path = os.environ.setdefault("dramatiq_prom_db", os.path.join(tempfile.gettempdir(), "dramatiq-prometheus"))
    return use_metrics_dir(path)
