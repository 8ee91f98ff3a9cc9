"""Events the simulator fails to generate, and v2.core.health.event_generation_failure.resolved."""

from __future__ import annotations

import json

import pytest
import stripe
from sim import FAST_DELIVERY, SIM_SECRET, Receiver

from stripesim import SimControl, SimError, Simulator
from stripesim.server import start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_790_000_000
DAY = 86400
KEY = "sk_test_sim"
HEALTH = "v2.core.health.event_generation_failure.resolved"


@pytest.fixture
def endpoints():
    thin, snap = Receiver(), Receiver()
    yield thin, snap
    thin.close()
    snap.close()


@pytest.fixture
def served(endpoints):
    thin, snap = endpoints
    sim = Simulator(
        payment_events=False,
        start=T0,
        seed=6,
        api_key=KEY,
        webhook_urls=[snap.url],
        thin_webhook_urls=[thin.url],
        webhook_secret=SIM_SECRET,
        delivery=FAST_DELIVERY,
    )
    url, stop = start_in_thread(sim)
    yield sim, url, stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    stop()
    sim.close()


def types(receiver: Receiver) -> list[str]:
    return [json.loads(h["body"])["type"] for h in receiver.hits]


def test_a_lost_event_never_exists_and_its_health_event_names_the_object(served, endpoints):
    sim, _, client = served
    thin, snap = endpoints
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)["id"]
    rule = sim.fail_event_generation("invoice.paid")
    assert rule == {"type": "invoice.paid", "remaining": 1, "object": None, "account": None, "resolve_after": 3600}
    sim.advance(30 * DAY + 3600)  # the renewal is paid, its invoice.paid is lost
    renewal = sim.get_subscription(sub)["latest_invoice"]
    assert sim.get_invoice(renewal)["status"] == "paid"  # the change happened
    assert sim.flush(5)
    paid = list(sim.all_events("invoice.paid"))
    assert [e["data"]["object"]["id"] for e in paid] == [sim.list_invoices(subscription=sub)["data"][1]["id"]]
    assert renewal not in {e.data.object.id for e in client.v1.events.list({"type": "invoice.paid"}).data}
    assert "v1.invoice.paid" not in types(thin)[-3:]
    assert types(snap)[-1] == "invoice.payment_succeeded"
    assert types(thin).count("v1.invoice.paid") == 1  # the first invoice's only
    assert sim.event_generation_failures()[0]["resolved_event"] is None

    sim.advance(3600)  # resolve_after: the health event
    assert sim.flush(5)
    assert types(thin)[-1] == HEALTH
    assert HEALTH not in types(snap)  # a v2 event: thin endpoints only
    hit = thin.hits[-1]
    pushed = json.loads(hit["body"])
    assert pushed == {
        "id": pushed["id"],
        "object": "v2.core.event",
        "type": HEALTH,
        "created": pushed["created"],
        "livemode": False,
        "context": None,
        "reason": None,
        "related_object": None,
        "snapshot_event": None,
    }
    note = client.parse_event_notification(hit["body"], hit["signature"], SIM_SECRET)
    event = note.fetch_event()  # its data is a fetched attribute
    data = event.data.to_dict()
    assert data["alert_id"].startswith("halert_")
    assert data["resolved_at"] == pushed["created"]
    assert data["summary"] == "We have failed to create a notification for your Stripe account."
    assert data["impact"] == {
        "event_type": "invoice.paid",
        "livemode": False,
        "missing_delivery_attempts": 2,
        "related_object_id": renewal,
        "related_object": {"id": renewal, "type": "invoice", "url": f"/v1/invoices/{renewal}"},
    }
    # what the product does with it: fetch the object and apply it
    fetched = client.raw_request("get", data["impact"]["related_object"]["url"])
    assert json.loads(fetched.body)["status"] == "paid"
    failures = sim.event_generation_failures()
    assert failures[0]["resolved_event"] == pushed["id"]
    assert sim.resolve_event_generation_failures() == []  # nothing left
    # later invoice.paid events are generated again (n=1)
    sim.advance(31 * DAY)
    assert len(sim.all_events("invoice.paid")) == 2


def test_a_connected_accounts_loss_is_told_to_the_platform(served, endpoints):
    sim, _, client = served
    thin, _ = endpoints
    acct = sim.create_account()["id"]
    cus = sim.create_customer(account=acct)["id"]
    sim.fail_event_generation("customer.subscription.*", n=2, account=acct, resolve_after=None)
    sub = sim.create_subscription(cus, account=acct)["id"]
    assert [e["type"] for e in sim.all_events(account=acct)] == [
        "customer.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    sim.advance(10 * DAY)
    assert sim.flush(5)
    assert HEALTH not in types(thin)  # left for an explicit resolve
    events = sim.resolve_event_generation_failures()
    assert len(events) == 2
    assert sim.flush(5)
    assert types(thin)[-2:] == [HEALTH, HEALTH]
    impacts = [e["data"]["impact"] for e in events]
    assert [i["event_type"] for i in impacts] == ["customer.subscription.created", "customer.subscription.updated"]
    assert {i["context"] for i in impacts} == {acct}
    assert {i["account"] for i in impacts} == {acct}
    assert {i["related_object"]["url"] for i in impacts} == {f"/v1/subscriptions/{sub}"}
    # the health events are the platform's; the object is read in the account's context
    assert client.v2.core.events.retrieve(events[0]["id"]).type == HEALTH
    got = client.v1.subscriptions.retrieve(sub, options={"stripe_context": impacts[0]["context"]})
    assert got.status == "active"


def test_object_filter_and_the_control_api(served, endpoints):
    sim, url, _ = served
    _thin, _ = endpoints
    ctl = SimControl(url)
    a = ctl.create_customer(email="a@example.com")["id"]
    b = ctl.create_customer(email="b@example.com")["id"]
    ctl.fail_event_generation("customer.updated", object=b, resolve_after=None)
    ctl.update_customer(a, name="A")
    ctl.update_customer(b, name="B")
    ctl.update_customer(b, name="B2")  # the rule was for one event
    updated = [e["data"]["object"]["id"] for e in ctl.events(type="customer.updated")]
    assert updated == [a, b]
    failures = ctl.event_generation_failures()
    assert [(f["event_type"], f["related_object"]["id"]) for f in failures] == [("customer.updated", b)]
    [health] = ctl.resolve_event_generation_failures()
    assert health["data"]["impact"]["related_object"]["url"] == f"/v1/customers/{b}"
    assert ctl.thin_events(type="v2.core.*") == [health]
    with pytest.raises(SimError):
        sim.fail_event_generation("invoice.paid", n=0)
    ctl.close()
