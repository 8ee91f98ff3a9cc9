"""The baseline receiver: the in-request handler Stripe's documentation shows, as a Flask app.

`stripe.Webhook.construct_event(payload, sig_header, secret)`, then the event
is upserted inside the request and the answer is 200. Served by the same
server and settings as ours (the Procfile's web line with
`bench.baseline_app:create_app` as its argument: same workers, threads), on the
same PostgreSQL, through the same pool (`subsync.db.open_pool`, same size and
settings, no test before checkout), into a table of the same shape
(`stripe_events` with its indexes), with the same statement committed the
same way as ours (`subsync.store.events.insert` in autocommit: one round trip). So
the two differ only in what the request does before the insert and after
the commit.

What it does NOT do, and ours does (each of these costs ours, not it):
- no queueing: nothing tells a worker the event is there (ours sends a
  Dramatiq message to Redis after the commit);
- no log line and no metrics per delivery (ours writes both);
- no secret rotation, no refusal of future timestamps, no body-size limit, no
  503 for a database that is down (an exception is a 500 here), no second try
  on a connection PostgreSQL dropped.
It stores the raw body, as ours does: re-serialising the StripeObject would
only make it slower.
"""

from __future__ import annotations

import os

import stripe
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from subsync import db
from subsync.envelope import EventHeader
from subsync.store import events
from webhooks import WEB_POOL_SIZE


def create_app() -> Flask:
    app = Flask(__name__)
    endpoint_secret = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
    pool = db.open_pool(os.environ["DATABASE_URL"], name="baseline", max_size=WEB_POOL_SIZE, check=False)

    @app.post("/webhooks/stripe")
    def webhook() -> ResponseReturnValue:
        payload = request.data
        sig_header = request.headers.get("Stripe-Signature", "")
        try:
            event = stripe.Webhook.construct_event(payload, sig_header, endpoint_secret)
        except ValueError:  # invalid payload
            return jsonify(success=False), 400
        except stripe.SignatureVerificationError:
            return jsonify(success=False), 400
        obj = event.data.object
        header = EventHeader(
            id=event.id,
            type=event.type,
            api_version=getattr(event, "api_version", None),
            livemode=bool(getattr(event, "livemode", False)),
            account=getattr(event, "account", None),
            created=event.created,
            object_id=getattr(obj, "id", None),
        )
        with pool.connection() as conn:
            conn.autocommit = True
            events.insert(conn, header, payload.decode("utf-8"))
        return jsonify(success=True)

    return app
