"""Thin events in the simulator: thin-payload endpoints, their JSON, /v2/core/events, chaos, Connect."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import stripe
from sim import FAST_DELIVERY, SIM_SECRET, Receiver

from stripesim import SimControl, Simulator
from stripesim.server import start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_790_000_000  # 2026-09-21
DAY = 86400
KEY = "sk_test_sim"
PUSHED = {"id", "object", "type", "created", "livemode", "context", "reason", "related_object", "snapshot_event"}


def thin_sim(receiver: Receiver, snapshot: list[str] | None = None, **delivery) -> Simulator:
    return Simulator(
        payment_events=False,
        start=T0,
        seed=4,
        api_key=KEY,
        webhook_urls=snapshot or [],
        thin_webhook_urls=[receiver.url],
        webhook_secret=SIM_SECRET,
        delivery={**FAST_DELIVERY, **delivery},
    )


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def client_for():
    stops = []

    def serve(sim: Simulator) -> stripe.StripeClient:
        url, stop = start_in_thread(sim)
        stops.append(stop)
        return stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)

    yield serve
    for stop in stops:
        stop()


def bodies(receiver: Receiver) -> list[dict]:
    return [json.loads(h["body"]) for h in receiver.hits]


def test_a_thin_endpoint_gets_each_event_as_a_signed_v2_event(receiver, client_for):
    sim = thin_sim(receiver)
    client = client_for(sim)
    cus = sim.create_customer(email="t@example.com")["id"]
    sub = sim.create_subscription(cus)["id"]
    assert sim.flush(5)
    snapshots = sim.all_events()
    got = bodies(receiver)
    assert [b["type"] for b in got] == ["v1." + e["type"] for e in snapshots]
    first = got[0]
    assert set(first) == PUSHED  # no data, no changes: fetched attributes
    assert first["object"] == "v2.core.event"
    assert first["id"].startswith("evt_test_65")
    assert first["id"] != snapshots[0]["id"]
    assert first["snapshot_event"] == snapshots[0]["id"]
    assert first["created"] == "2026-09-21T14:13:20.000Z"
    assert (first["livemode"], first["context"]) == (False, None)
    assert first["related_object"] == {"id": cus, "type": "customer", "url": f"/v1/customers/{cus}"}
    assert first["reason"] == {
        "type": "request",
        "request": {"id": snapshots[0]["request"]["id"], "idempotency_key": None},
    }
    kinds = {b["type"]: b["related_object"] for b in got}
    assert kinds["v1.customer.subscription.created"]["url"] == f"/v1/subscriptions/{sub}"
    inv = sim.get_subscription(sub)["latest_invoice"]
    assert kinds["v1.invoice.paid"] == {"id": inv, "type": "invoice", "url": f"/v1/invoices/{inv}"}
    assert all(e["pending_webhooks"] == 0 for e in snapshots)  # no snapshot endpoint

    hit = receiver.hits[-1]
    note = client.parse_event_notification(hit["body"], hit["signature"], SIM_SECRET)
    assert (note.id, note.type) == (got[-1]["id"], "v1.customer.subscription.updated")
    assert note.fetch_related_object().id == sub
    event = note.fetch_event()
    assert event.snapshot_event == snapshots[-1]["id"]
    assert event.changes["before"].to_dict() == snapshots[-1]["data"]["previous_attributes"]
    assert event.changes["after"]["status"] == "active"
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(hit["body"], hit["signature"], "whsec_other")
    with pytest.raises(ValueError, match="construct_event"):
        client.parse_event_notification_without_verification(json.dumps(snapshots[0]))
    sim.close()


def test_snapshot_and_thin_endpoints_side_by_side(receiver):
    snap = Receiver()
    sim = thin_sim(receiver, snapshot=[snap.url])
    sim.create_subscription(sim.create_customer()["id"])
    assert sim.flush(5)
    snapshots = sim.all_events()
    assert snap.ids == [e["id"] for e in snapshots]
    assert [b["snapshot_event"] for b in bodies(receiver)] == snap.ids
    assert all(e["pending_webhooks"] == 1 for e in snapshots)  # the snapshot endpoint only
    assert sim.settings()["thin_webhook_urls"] == [receiver.url]
    assert sim.settings()["webhook_urls"] == [snap.url]
    # the same url may take both; a new secret signs both
    sim.configure_delivery(urls=[receiver.url], thin_urls=[receiver.url], secret="whsec_new")
    sim.create_customer()
    assert sim.flush(5)
    last_two = receiver.hits[-2:]
    assert sorted(json.loads(h["body"])["object"] for h in last_two) == ["event", "v2.core.event"]
    for hit in last_two:
        assert stripe.WebhookSignature.verify_header(hit["body"], hit["signature"], "whsec_new", tolerance=300)
    snap.close()
    sim.close()


def test_a_whole_lifecycle_as_thin_events_under_chaos(receiver):
    sim = thin_sim(receiver, duplicate_rate=0.3, resend_rate=0.2, reorder_window=4, drop_rate=0.1)
    subs = [sim.create_subscription(sim.create_customer()["id"])["id"] for _ in range(3)]
    sim.fail_next_payments(sim.get_subscription(subs[0])["customer"], n=1)
    sim.advance(62 * DAY)
    sim.cancel_subscription(subs[1])
    assert sim.flush(10)
    thin = sim.all_thin_events()
    snapshots = sim.all_events()
    assert len(thin) == len(snapshots)  # a resent copy has a thin twin of its own
    assert [t["snapshot_event"] for t in thin] == [e["id"] for e in snapshots]
    stats = sim.delivery_stats()
    assert stats["duplicated"] > 0
    assert stats["resent"] > 0
    assert stats["dropped"] > 0
    counts = Counter(receiver.ids)
    assert max(counts.values()) == 2  # duplicates keep the thin id
    assert set(counts) < {t["id"] for t in thin}  # some dropped
    arrived = list(dict.fromkeys(receiver.ids))
    assert arrived != [t["id"] for t in thin if t["id"] in counts]  # reordered
    assert all(b["object"] == "v2.core.event" for b in bodies(receiver))
    sim.close()


def test_v2_events_api(receiver, client_for):
    sim = thin_sim(receiver)
    client = client_for(sim)
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)["id"]
    sim.advance(10 * DAY)
    sim.update_subscription_metadata(sub, {"k": "v"})
    thin = sim.all_thin_events()
    newest = client.v2.core.events.retrieve(thin[-1]["id"])
    assert (newest.id, newest.type) == (thin[-1]["id"], "v1.customer.subscription.updated")
    assert newest.changes["before"].to_dict() == {"metadata": {}}

    page = client.v2.core.events.list({"limit": 3})
    assert [e.id for e in page.data] == [t["id"] for t in reversed(thin)][:3]
    assert page.next_page_url is not None
    assert [e.id for e in page.auto_paging_iter()] == [t["id"] for t in reversed(thin)]
    only = client.v2.core.events.list({"types": ["v1.invoice.paid", "v1.customer.created"]})
    assert sorted(e.type for e in only.data) == ["v1.customer.created", "v1.invoice.paid"]
    about = client.v2.core.events.list({"object_id": cus})
    assert [e.type for e in about.data] == ["v1.customer.created"]
    later = client.v2.core.events.list({"created": {"gt": "2026-09-22T00:00:00.000Z"}})
    assert [e.id for e in later.data] == [thin[-1]["id"]]
    raw = client.raw_request("get", f"/v2/core/events/{thin[0]['id']}")
    assert json.loads(raw.body)["related_object"]["id"] == cus

    # kept 30 days, as v1 events
    sim.advance(25 * DAY)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v2.core.events.retrieve(thin[0]["id"])
    assert err.value.http_status == 404
    listed = [e.id for e in client.v2.core.events.list({"limit": 100}).data]
    assert thin[-1]["id"] in listed
    assert thin[0]["id"] not in listed
    assert listed[0] == sim.all_thin_events()[-1]["id"]  # the renewal's, newest first
    sim.close()


def test_a_connected_accounts_thin_events_carry_its_context(receiver, client_for):
    sim = thin_sim(receiver)
    client = client_for(sim)
    acct = sim.create_account(business_name="Shop")["id"]
    cus = sim.create_customer(account=acct)["id"]
    sub = sim.create_subscription(cus, account=acct)["id"]
    assert sim.flush(5)
    got = bodies(receiver)
    assert {b["context"] for b in got} == {acct}
    hit = receiver.hits[-1]
    note = client.parse_event_notification(hit["body"], hit["signature"], SIM_SECRET)
    assert str(note.context) == acct
    assert note.fetch_related_object().id == sub  # fetched with Stripe-Context
    assert note.fetch_event().id == got[-1]["id"]
    # the platform's own reads do not see them
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.core.events.retrieve(got[-1]["id"])
    assert client.v2.core.events.list().data == []
    listed = client.v2.core.events.list(options={"stripe_context": acct})
    assert len(listed.data) == len(got)
    # v2 is told the account by Stripe-Context alone: Stripe-Account there reads the platform's
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.core.events.retrieve(got[-1]["id"], options={"stripe_account": acct})
    assert client.v2.core.events.retrieve(got[-1]["id"], options={"stripe_context": acct}).id == got[-1]["id"]
    # Stripe-Context reaches v1 objects as Stripe-Account does
    assert client.v1.subscriptions.retrieve(sub, options={"stripe_context": acct}).id == sub
    sim.deauthorize_account(acct)
    sim.advance(31 * DAY)
    assert sim.flush(5)
    assert [b["type"] for b in bodies(receiver)[len(got) :]] == ["v1.account.application.deauthorized"]
    last = bodies(receiver)[-1]
    assert last["related_object"] is None
    assert last["context"] == acct
    assert len(sim.all_thin_events(account=acct)) > len(got) + 1  # renewals still happen, unheard
    sim.close()


def test_live_mode_ids_and_the_control_api(receiver):
    sim = Simulator(
        payment_events=False,
        start=T0,
        seed=4,
        api_key="sk_live_sim",
        thin_webhook_urls=[receiver.url],
        delivery=FAST_DELIVERY,
    )
    url, stop = start_in_thread(sim)
    ctl = SimControl(url)
    cus = ctl.create_customer(email="l@example.com")["id"]
    thin = ctl.thin_events()
    assert len(thin) == 1
    assert thin[0]["id"].startswith("evt_65")
    assert thin[0]["livemode"] is True
    assert thin[0]["related_object"]["id"] == cus
    assert ctl.thin_events(type="v1.customer.*") == thin
    assert ctl.configure_delivery(thin_urls=[])["thin_webhook_urls"] == []
    ctl.close()
    stop()
    sim.close()


def test_dropping_types_also_drops_their_thin_twins(receiver):
    sim = thin_sim(receiver, drop_types=["invoice.*"])
    sim.create_subscription(sim.create_customer()["id"])
    assert sim.flush(5)
    assert [b["type"] for b in bodies(receiver)] == [
        "v1.customer.created",
        "v1.customer.subscription.created",
        "v1.customer.subscription.updated",
    ]
    dropped = [d for d in sim.delivery.deliveries() if d["result"] == "dropped"]
    assert {(d["reason"], d["payload"]) for d in dropped} == {("drop_types", "thin")}
    assert len(sim.list_v2_events(types=["v1.invoice.*"])["data"]) == 4  # they exist
    sim.close()


def test_the_cli_takes_thin_endpoints():
    from stripesim.__main__ import build_parser

    args = build_parser().parse_args(["--thin-webhook-url", "http://a/x", "--thin-webhook-url", "http://b/y"])
    assert args.thin_webhook_url == ["http://a/x", "http://b/y"]
    assert build_parser().parse_args([]).thin_webhook_url == []
