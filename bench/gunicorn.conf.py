"""gunicorn settings for the benches' gunicorn candidates (bench/servers.py).

These are the settings the web process ran with before it moved to granian
(webhooks/serve.py): one process per core, gthread with WEB_THREADS threads,
no access line, gunicorn's lines in the app's format, the sender flushed
when a worker exits. The servers bench runs them as they were, and with
gevent's worker, against the Procfile's granian.
"""

import sys

from gunicorn.glogging import Logger

from subsync import config as _config

# Underscored: gunicorn reads every other top-level name as one of its settings.
_settings = _config.load()
bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gthread"
threads = _settings.web_threads
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None  # the app logs one line per delivery


class AccessLogOnlyIfAsked(Logger):
    """gunicorn writes an access line per request whenever logconfig_dict is set,
    accesslog or not: a second line per delivery, and a noticeable share of
    an ack's CPU. Only an explicit --access-logfile turns it on here.
    """

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = AccessLogOnlyIfAsked
# gunicorn's own lines in the same structured format as the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structlog": {"()": "subsync.logs.formatter", "log_format": _settings.log_format}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}

# /metrics must add up every worker process.
_config.use_metrics_dir(_settings.metrics_dir)

# gunicorn's control socket has one default path per user ($HOME/.gunicorn):
# a second web process on the machine (scaling, tests, benchmarks) would take
# it over. Nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server):  # noqa: ARG001 - gunicorn's hook signature
    """Refuse to start without a webhook secret, in one line, before forking."""
    try:
        _settings.require_webhook_secrets()
    except _config.ConfigError as exc:
        print(f"subsync web: {exc}", file=sys.stderr)
        sys.exit(1)


# On a graceful stop, send what the receiver handed to the sender thread;
# what is still unsent after this is queued by the outbox sweep.
SENDER_FLUSH_S = 5.0


def worker_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature, run in the worker
    from subsync.queue import flush_senders

    flush_senders(SENDER_FLUSH_S)


def child_exit(server, worker):  # noqa: ARG001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
