"""gunicorn settings for the web process (read from the working directory).

One process per core: an ack is about a millisecond of Python under the GIL,
so a process uses one core at most. gthread with 4 threads: between its CPU
bursts a request waits for its commit (the WAL flush) and for Redis, and
4 requests in flight keep the core busy across those waits and hand
PostgreSQL concurrent commits to flush together. More threads only add GIL
hand-offs, latency and pooled connections (one per busy thread); fewer let
the core idle during commits. On the shared 2-core machine 2, 4 and 8 threads
did not differ beyond the noise; `WEB_THREADS=8 make bench-receiver` compares
them (both servers take it).
"""

import multiprocessing
import os
import sys
import tempfile

from gunicorn.glogging import Logger

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None  # the app logs one line per delivery


class AccessLogOnlyIfAsked(Logger):
    """gunicorn writes an access line per request whenever logconfig_dict is set,
    accesslog or not: a second line per delivery, and about a tenth of an
    ack's CPU. Only an explicit --access-logfile turns it on here.
    """

    def access(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201 - gunicorn's signature
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = AccessLogOnlyIfAsked
# gunicorn's own lines in the same structured format as the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structlog": {"()": "subsync.logs.formatter_from_env"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}

# /metrics must add up every worker process.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="subsync-prom-"))

# gunicorn's control socket has one default path per user ($HOME/.gunicorn):
# a second web process on the machine (scaling, tests, benchmarks) would take
# it over. Nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server):  # noqa: ANN001, ANN201, ARG001 - gunicorn's hook signature
    """Refuse to start without a webhook secret, in one line, before forking."""
    if not os.environ.get("STRIPE_WEBHOOK_SECRET", "").strip():
        print(  # noqa: T201
            "subsync web: STRIPE_WEBHOOK_SECRET is not set: give one or more whsec_... secrets, comma-separated",
            file=sys.stderr,
        )
        sys.exit(1)


# On a graceful stop, send what the receiver handed to the sender thread;
# what is still unsent after this is queued by the outbox sweep.
SENDER_FLUSH_S = 5.0


def worker_exit(server, worker):  # noqa: ANN001, ANN201, ARG001 - gunicorn's hook signature, run in the worker
    from worker.queue import sender  # noqa: PLC0415

    sender.flush(SENDER_FLUSH_S)


def child_exit(server, worker):  # noqa: ANN001, ANN201, ARG001
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)
