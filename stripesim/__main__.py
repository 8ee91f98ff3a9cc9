"""``python -m stripesim --port 12111 ...``: run the simulator as a process."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
from types import FrameType

from .server import make_sim_server
from .shapes import BASIL
from .state import Simulator


def _time(value: str) -> int:
    """Unix seconds, or an ISO 8601 time (``2025-01-31T00:00:00Z``; UTC if no zone)."""
    if value.lstrip("-").isdigit():
        return int(value)
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stripesim", description="A local Stripe-compatible simulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12111)
    p.add_argument("--api-key", default="sk_test_sim", help="sk_live_/rk_live_ keys make a live-mode simulator")
    p.add_argument("--mode", choices=("live", "test"), default=None, help="live or test mode (default: the key's)")
    p.add_argument("--webhook-url", action="append", default=[], help="repeat for several endpoints")
    p.add_argument(
        "--thin-webhook-url", action="append", default=[], help="an endpoint of thin payloads (v2.core.event)"
    )
    p.add_argument("--webhook-secret", default="whsec_sim", help="comma-separated to sign with several")
    p.add_argument("--api-version", default=BASIL)
    p.add_argument("--start", type=_time, default=None, help="unix time or ISO 8601 (default: now)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dunning-end", choices=("canceled", "unpaid", "past_due"), default="canceled")
    p.add_argument("--retry-schedule-days", default="3,5,7", help="days after the first failure, comma-separated")
    p.add_argument("--delivery", default="{}", help='JSON delivery/chaos settings, e.g. {"duplicate_rate": 0.1}')
    p.add_argument(
        "--payment-events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="payment intents and charges of invoices and sessions emit their own events (charge.succeeded, ...),"
        " as on Stripe; --no-payment-events leaves them out",
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    days = [float(d) for d in args.retry_schedule_days.split(",") if d.strip()]
    sim = Simulator(
        api_version=args.api_version,
        start=args.start,
        api_key=args.api_key,
        seed=args.seed,
        webhook_urls=args.webhook_url,
        thin_webhook_urls=args.thin_webhook_url,
        webhook_secret=args.webhook_secret,
        delivery=json.loads(args.delivery),
        dunning_end=args.dunning_end,
        retry_schedule_days=days,
        livemode=None if args.mode is None else args.mode == "live",
        payment_events=args.payment_events,
    )
    server = make_sim_server(sim, args.host, args.port, quiet=not args.verbose)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    thread = threading.Thread(target=server.serve_forever, name="stripesim-http", daemon=True)
    thread.start()
    sys.stdout.write(
        f"stripesim ready on http://{args.host}:{server.server_port} "
        f"api_version={args.api_version} now={sim.now()} webhooks={','.join(args.webhook_url) or '-'}"
        f"{' livemode=true' if sim.livemode else ''}\n"
    )
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    sim.flush(timeout=2.0)
    sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
