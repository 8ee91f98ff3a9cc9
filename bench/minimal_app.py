"""The minimal durable receiver: the same guarantees as ours, in the fewest steps.

Verify the signature (`stripe.WebhookSignature.verify_header`, then
`json.loads`: no StripeObject tree), store the event with one
`INSERT ... ON CONFLICT (id) DO NOTHING` in autocommit (durable when it
returns), send one Dramatiq message with the event id, answer 200. Served
like ours (`python -m webhooks.serve bench.minimal_app:create_app`),
into the same `stripe_events` table, its messages in a queue named like
ours (`stripe_events`) under the QUEUE_NAMESPACE it is given.

What it leaves out, that ours does: secret rotation, refusing timestamps
from the future, a body-size limit, the 503 for a database that is down, a
second try on a dropped connection, reopening a failed event on a
duplicate, log lines, metrics, and sending after the answer (it waits for
Redis). None of it imports the product's code: this is what any Flask
receiver that stores, then queues, costs here.
"""

from __future__ import annotations

import json
import os

import dramatiq
import stripe
from dramatiq.brokers.redis import RedisBroker
from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

from webhooks import WEB_POOL_SIZE

INSERT = """
INSERT INTO stripe_events (id, type, api_version, livemode, account, created_at, payload, object_id)
VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s::jsonb, %s)
ON CONFLICT (id) DO NOTHING
"""
TOLERANCE_S = 300
OK = b'{"received": true}'


def create_app() -> Flask:
    secret = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
    broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["QUEUE_NAMESPACE"])
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="stripe_events", broker=broker)
    def process_event(event_id: str) -> None:
        """Nothing consumes it in the receiver bench: only the send is measured."""

    # The same size as ours and the baseline's, no test per checkout.
    pool: ConnectionPool = ConnectionPool(
        os.environ["DATABASE_URL"], min_size=1, max_size=WEB_POOL_SIZE, kwargs={"autocommit": True}, open=False
    )
    pool.open(wait=False)
    app = Flask(__name__)

    @app.post("/webhooks/stripe")
    def webhook() -> Response:
        payload = request.get_data(cache=False).decode("utf-8")
        try:
            stripe.WebhookSignature.verify_header(
                payload, request.headers.get("Stripe-Signature", ""), secret, TOLERANCE_S
            )
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError):
            return Response(b'{"received": false}', status=400, mimetype="application/json")
        obj = event["data"]["object"]
        with pool.connection() as conn:
            conn.execute(
                INSERT,
                (
                    event["id"],
                    event["type"],
                    event.get("api_version"),
                    event.get("livemode") is True,
                    event.get("account"),
                    event["created"],
                    payload,
                    obj.get("id"),
                ),
            )
        process_event.send(event["id"])
        return Response(OK, mimetype="application/json")

    return app
