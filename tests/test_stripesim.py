"""The Stripe simulator, driven through the real stripe library over HTTP."""

from __future__ import annotations

import email.utils

import pytest
import requests
import stripe

from stripesim import BASIL, LEGACY, SimControl, SimError, Simulator, start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86400
KEY = "sk_test_sim"


@pytest.fixture
def sim():
    s = Simulator(payment_events=False, start=T0, seed=7, api_key=KEY)
    yield s
    s.close()


@pytest.fixture
def served(sim):
    url, shutdown = start_in_thread(sim)
    yield sim, url
    shutdown()


@pytest.fixture
def client(served):
    _, url = served
    return stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=2)


def types_since(sim: Simulator, start: int) -> list[str]:
    return [e["type"] for e in sim.all_events()[start:]]


def new_sub(sim: Simulator, **kw) -> tuple[str, str]:
    cus = sim.create_customer(email="a@example.com")["id"]
    sub = sim.create_subscription(cus, **kw)["id"]
    return cus, sub


# ----------------------------------------------------------------------------- API


def test_auto_paging_lists_every_subscription_once(served, client):
    sim, _ = served
    created = sim.bulk_create(250, canceled_every=5)["subscriptions"]
    every = [s.id for s in client.v1.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter()]
    assert len(every) == 250
    assert set(every) == set(created)
    assert every == list(reversed(created))  # newest first, ties in creation order
    default = [s.id for s in client.v1.subscriptions.list({"limit": 100}).auto_paging_iter()]
    assert len(default) == 200
    canceled = {s.id for s in client.v1.subscriptions.list({"status": "canceled", "limit": 100}).auto_paging_iter()}
    assert len(canceled) == 50
    assert canceled.isdisjoint(default)
    assert canceled | set(default) == set(created)


def test_page_cursors(served, client):
    sim, _ = served
    created = sim.bulk_create(30)["subscriptions"]
    newest_first = list(reversed(created))
    page = client.v1.subscriptions.list({"limit": 10})
    assert [s.id for s in page.data] == newest_first[:10]
    assert page.has_more is True
    assert page.url == "/v1/subscriptions"
    page = client.v1.subscriptions.list({"limit": 10, "starting_after": newest_first[9]})
    assert [s.id for s in page.data] == newest_first[10:20]
    page = client.v1.subscriptions.list({"limit": 5, "ending_before": newest_first[20]})
    assert [s.id for s in page.data] == newest_first[15:20]
    assert page.has_more is True
    last = client.v1.subscriptions.list({"limit": 10, "starting_after": newest_first[19]})
    assert last.has_more is False
    backwards = list(client.v1.subscriptions.list({"limit": 7, "ending_before": newest_first[25]}).auto_paging_iter())
    assert [s.id for s in backwards] == list(reversed(newest_first[:25]))


def test_list_filters_by_customer_and_rejects_bad_limit(served, client):
    sim, _ = served
    cus, sub = new_sub(sim)
    sim.bulk_create(5)
    mine = client.v1.subscriptions.list({"customer": cus})
    assert [s.id for s in mine.data] == [sub]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.list({"limit": 101})
    assert err.value.param == "limit"


def test_retrieve_and_missing_objects(served, client):
    sim, _ = served
    cus, sub = new_sub(sim)
    got = client.v1.subscriptions.retrieve(sub)
    assert got.id == sub
    assert got.customer == cus
    assert got["items"].data[0].price.unit_amount == 2999
    assert got["items"].data[0].price.recurring.interval == "month"
    inv = client.v1.invoices.retrieve(got.latest_invoice)
    assert inv.status == "paid"
    assert client.v1.customers.retrieve(cus).email == "a@example.com"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.retrieve("sub_missing")
    assert err.value.http_status == 404
    assert err.value.code == "resource_missing"
    assert err.value.param == "id"
    assert err.value.json_body == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such subscription: 'sub_missing'",
            "param": "id",
        }
    }
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve("evt_missing")


def test_expand_latest_invoice(served, client):
    sim, _ = served
    _, sub = new_sub(sim)
    got = client.v1.subscriptions.retrieve(sub, {"expand": ["latest_invoice"]})
    assert got.latest_invoice.object == "invoice"
    page = client.v1.subscriptions.list({"expand": ["data.latest_invoice"]})
    assert page.data[0].latest_invoice.id == got.latest_invoice.id


def test_bad_or_missing_key(served):
    _, url = served
    bad = stripe.StripeClient("sk_test_wrong", base_addresses={"api": url})
    with pytest.raises(stripe.AuthenticationError) as err:
        bad.v1.subscriptions.list()
    assert err.value.http_status == 401
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    resp = requests.get(f"{url}/v1/subscriptions", timeout=5)
    assert resp.status_code == 401
    assert "API key" in resp.json()["error"]["message"]


def test_rate_limit_is_retried_by_the_library(served, client):
    sim, url = served
    sim.set_rate_limit(next=1)
    assert client.v1.subscriptions.list().object == "list"  # 429 then retried
    assert sim.settings()["rate_limit"] == {}
    sim.set_rate_limit(next=1)
    no_retry = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    with pytest.raises(stripe.RateLimitError) as err:
        no_retry.v1.subscriptions.list()
    assert err.value.http_status == 429
    assert err.value.json_body["error"]["code"] == "rate_limit"
    assert err.value.headers["Stripe-Should-Retry"] == "true"
    sim.set_rate_limit(every=3)
    statuses = [requests.get(f"{url}/v1/events", auth=(KEY, ""), timeout=5).status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 200, 200, 429]
    sim.set_rate_limit()


def test_date_header_is_the_simulated_clock(served):
    sim, url = served
    resp = requests.get(f"{url}/v1/events", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert resp.headers.get_all if hasattr(resp.headers, "get_all") else True
    assert email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp() == T0
    assert resp.headers["Request-Id"].startswith("req_")
    sim.advance(3 * DAY + 5)
    resp = requests.get(f"{url}/v1/subscriptions/sub_x", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert resp.status_code == 404
    assert email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp() == T0 + 3 * DAY + 5
    assert "," not in resp.headers["Date"].split(",", 1)[1]  # one Date header, not two joined


def test_events_list_filters_and_window(served, client):
    sim, _ = served
    cus, _ = new_sub(sim)
    sim.advance(DAY)
    sim.update_customer(cus, name="Ann")
    sim.advance(40 * DAY)  # past the first renewal
    all_events = sim.all_events()
    window = [e for e in all_events if e["created"] >= sim.now() - 30 * DAY]
    listed = [e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    assert listed == [e["id"] for e in reversed(window)]
    assert all_events[0]["id"] not in listed
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(all_events[0]["id"])
    latest = client.v1.events.retrieve(window[-1]["id"])
    assert latest.type == window[-1]["type"]
    paid = client.v1.events.list({"type": "invoice.paid"})
    assert [e.type for e in paid.data] == ["invoice.paid"]
    wild = {e.type for e in client.v1.events.list({"type": "invoice.*", "limit": 100}).auto_paging_iter()}
    assert wild == {"invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"}
    two = client.v1.events.list({"types": ["invoice.created", "customer.subscription.updated"], "limit": 100})
    assert {e.type for e in two.data} == {"invoice.created", "customer.subscription.updated"}
    renewal_at = window[0]["created"]
    assert {e.created for e in client.v1.events.list({"created": {"gt": renewal_at}}).data} == {renewal_at + 3600}
    assert {e.created for e in client.v1.events.list({"created": {"lte": renewal_at}}).data} == {renewal_at}
    assert client.v1.events.list({"created": {"lt": renewal_at}}).data == []
    assert len(client.v1.events.list({"created": {"gte": renewal_at}, "limit": 100}).data) == len(window)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list({"type": "invoice.paid", "types": ["invoice.created"]})


def test_event_envelope(sim):
    cus = sim.create_customer(email="e@example.com")["id"]
    ev = sim.all_events()[-1]
    assert ev["object"] == "event"
    assert ev["id"].startswith("evt_")
    assert ev["type"] == "customer.created"
    assert ev["api_version"] == BASIL
    assert ev["created"] == T0
    assert ev["livemode"] is False
    assert ev["pending_webhooks"] == 0
    assert ev["request"]["id"].startswith("req_")
    assert ev["data"]["object"]["id"] == cus
    assert "previous_attributes" not in ev["data"]
    sim.update_customer(cus, email="f@example.com")
    upd = sim.all_events()[-1]
    assert upd["data"]["previous_attributes"] == {"email": "e@example.com"}
    # the snapshot is a copy: later changes do not alter it
    assert ev["data"]["object"]["email"] == "e@example.com"


# ------------------------------------------------------------------ state machine


@pytest.mark.parametrize("version", [BASIL, "2025-09-30.clover", LEGACY])
def test_renewal_events_and_shapes(version):
    sim = Simulator(payment_events=False, start=T0, seed=1, api_version=version)
    _, sub_id = new_sub(sim)
    first = sim.get_subscription(sub_id)
    basil = version != LEGACY
    item = first["items"]["data"][0]
    if basil:
        assert "current_period_end" not in first
        period_start, period_end = item["current_period_start"], item["current_period_end"]
    else:
        assert "current_period_end" not in item
        period_start, period_end = first["current_period_start"], first["current_period_end"]
    assert (period_start, period_end) == (T0, T0 + 31 * DAY)
    mark = len(sim.all_events())
    sim.advance_to(period_end + 3600)
    evs = sim.all_events()[mark:]
    assert [e["type"] for e in evs] == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert [e["created"] for e in evs] == [period_end] * 2 + [period_end + 3600] * 3
    assert len({e["id"] for e in evs}) == 5
    check_renewal_shapes(evs, sub_id, first, basil, period_end)
    sim.close()


def check_renewal_shapes(evs, sub_id, first, basil, period_end):
    updated = evs[0]["data"]
    sub = updated["object"]
    assert sub["status"] == "active"
    new_end = T0 + (31 + 28) * DAY  # Feb 2025
    inv = evs[3]["data"]["object"]
    if basil:
        assert sub["items"]["data"][0]["current_period_start"] == period_end
        assert sub["items"]["data"][0]["current_period_end"] == new_end
        prev_item = updated["previous_attributes"]["items"]["data"][0]
        assert prev_item["current_period_end"] == period_end
        assert "subscription" not in inv
        assert inv["parent"]["subscription_details"]["subscription"] == sub_id
        line = inv["lines"]["data"][0]
        assert line["parent"]["subscription_item_details"]["subscription"] == sub_id
        assert line["pricing"]["price_details"]["price"] == "price_premium_monthly"
    else:
        assert sub["current_period_start"] == period_end
        assert sub["current_period_end"] == new_end
        assert updated["previous_attributes"]["current_period_start"] == T0
        assert inv["subscription"] == sub_id
        assert inv["paid"] is True
        assert inv["lines"]["data"][0]["price"]["id"] == "price_premium_monthly"
    assert updated["previous_attributes"]["latest_invoice"] == first["latest_invoice"]
    assert sub["latest_invoice"] == inv["id"]
    assert inv["billing_reason"] == "subscription_cycle"
    assert (inv["period_start"], inv["period_end"]) == (T0, period_end)  # the period that ended
    assert inv["lines"]["data"][0]["period"] == {"start": period_end, "end": new_end}  # the new one
    assert inv["amount_paid"] == inv["amount_due"] == 2999
    assert inv["amount_remaining"] == 0
    assert inv["status_transitions"]["paid_at"] == period_end + 3600
    assert inv["status_transitions"]["finalized_at"] == period_end + 3600
    assert evs[1]["data"]["object"]["status"] == "draft"
    assert evs[3]["data"]["object"]["id"] == evs[4]["data"]["object"]["id"]


def test_create_subscription_events(sim):
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sub = sim.create_subscription(cus, price="price_premium_yearly")
    assert types_since(sim, mark) == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    assert sub["status"] == "active"
    assert sub["items"]["data"][0]["current_period_end"] == T0 + 365 * DAY
    inv = sim.get_invoice(sub["latest_invoice"])
    assert inv["billing_reason"] == "subscription_create"
    assert inv["amount_paid"] == 29990


def test_first_payment_fails_incomplete_then_expired(sim):
    cus = sim.create_customer()["id"]
    sim.fail_next_payments(cus, n=1)
    sub = sim.create_subscription(cus)
    assert sub["status"] == "incomplete"
    inv = sim.get_invoice(sub["latest_invoice"])
    assert (inv["status"], inv["attempt_count"], inv["next_payment_attempt"]) == ("open", 1, None)
    mark = len(sim.all_events())
    sim.advance(DAY)
    assert types_since(sim, mark) == ["customer.subscription.updated", "invoice.voided"]
    assert sim.get_subscription(sub["id"])["status"] == "incomplete_expired"
    sim.fail_next_payments(cus, n=1)
    with pytest.raises(SimError, match="declined") as err:
        sim.create_subscription(cus, payment_behavior="error_if_incomplete")
    assert (err.value.status, err.value.type, err.value.code) == (402, "card_error", "card_declined")


def test_dunning_ends_canceled(sim):
    cus, sub_id = new_sub(sim)
    sim.fail_next_payments(cus, until_new_card=True)
    end = T0 + 31 * DAY
    mark = len(sim.all_events())
    sim.advance_to(end + 8 * DAY)
    evs = sim.all_events()[mark:]
    assert [e["type"] for e in evs] == [
        "customer.subscription.updated",  # renewal
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "customer.subscription.updated",  # past_due
        "invoice.payment_failed",
        "invoice.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.deleted",
        "invoice.updated",
    ]
    first_fail = end + 3600
    failed = [e["data"]["object"] for e in evs if e["type"] == "invoice.payment_failed"]
    assert [i["attempt_count"] for i in failed] == [1, 2, 3, 4]
    assert [i["next_payment_attempt"] for i in failed] == [
        first_fail + 3 * DAY,
        first_fail + 5 * DAY,
        first_fail + 7 * DAY,
        None,
    ]
    assert evs[4]["data"]["object"]["status"] == "past_due"
    assert evs[4]["data"]["previous_attributes"] == {"status": "active"}
    deleted = evs[8]["data"]["object"]
    assert deleted["status"] == "canceled"
    assert deleted["cancellation_details"]["reason"] == "payment_failed"
    assert deleted["ended_at"] == deleted["canceled_at"] == first_fail + 7 * DAY
    inv = sim.get_invoice(deleted["latest_invoice"])
    assert inv["status"] == "open"  # Stripe leaves it open, no longer collected
    assert inv["auto_advance"] is False
    assert inv["next_payment_attempt"] is None
    assert sim.get_subscription(sub_id)["status"] == "canceled"


def test_dunning_ends_unpaid_then_paid_with_new_card(sim):
    sim.configure(dunning_end="unpaid", retry_schedule_days=[1, 2])
    cus, sub_id = new_sub(sim)
    sim.fail_next_payments(cus, until_new_card=True)
    mark = len(sim.all_events())
    sim.advance(34 * DAY)
    assert types_since(sim, mark)[-4:] == [
        "invoice.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.updated",
        "invoice.marked_uncollectible",
    ]
    sub = sim.get_subscription(sub_id)
    assert sub["status"] == "unpaid"
    inv = sim.get_invoice(sub["latest_invoice"])
    assert inv["status"] == "uncollectible"
    assert inv["status_transitions"]["marked_uncollectible_at"] is not None
    mark = len(sim.all_events())
    paid = sim.pay_open_invoice(sub_id)
    assert types_since(sim, mark) == [
        "customer.updated",  # the new card
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    assert paid["status"] == "paid"
    assert paid["attempt_count"] == 4
    assert sim.get_subscription(sub_id)["status"] == "active"


def test_past_due_recovers_on_retry(sim):
    cus, sub_id = new_sub(sim)
    sim.fail_next_payments(cus, n=1)
    sim.advance(31 * DAY + 3600)
    assert sim.get_subscription(sub_id)["status"] == "past_due"
    mark = len(sim.all_events())
    sim.advance(3 * DAY)
    assert types_since(sim, mark) == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"]
    assert sim.get_subscription(sub_id)["status"] == "active"


def test_trial(sim):
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sub = sim.create_subscription(cus, trial_days=14)
    assert sub["status"] == "trialing"
    assert (sub["trial_start"], sub["trial_end"]) == (T0, T0 + 14 * DAY)
    assert types_since(sim, mark) == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert sim.get_invoice(sub["latest_invoice"])["amount_due"] == 0
    mark = len(sim.all_events())
    sim.advance(14 * DAY + 3600)
    evs = sim.all_events()[mark:]
    assert [(e["type"], e["created"]) for e in evs] == [
        ("customer.subscription.trial_will_end", T0 + 11 * DAY),
        ("customer.subscription.updated", T0 + 14 * DAY),
        ("invoice.created", T0 + 14 * DAY),
        ("invoice.finalized", T0 + 14 * DAY + 3600),
        ("invoice.paid", T0 + 14 * DAY + 3600),
        ("invoice.payment_succeeded", T0 + 14 * DAY + 3600),
    ]
    assert evs[1]["data"]["object"]["status"] == "active"
    assert evs[1]["data"]["previous_attributes"]["status"] == "trialing"
    assert evs[4]["data"]["object"]["amount_paid"] == 2999


def test_cancel_at_period_end_and_now(sim):
    _, sub_id = new_sub(sim)
    sim.advance(DAY)
    sub = sim.cancel_subscription(sub_id, at_period_end=True)
    assert (sub["cancel_at_period_end"], sub["cancel_at"], sub["canceled_at"]) == (True, T0 + 31 * DAY, T0 + DAY)
    upd = sim.all_events()[-1]
    assert upd["type"] == "customer.subscription.updated"
    assert upd["data"]["previous_attributes"]["cancel_at_period_end"] is False
    mark = len(sim.all_events())
    sim.advance(40 * DAY)
    evs = sim.all_events()[mark:]
    assert [e["type"] for e in evs] == ["customer.subscription.deleted"]
    gone = evs[0]["data"]["object"]
    assert (gone["status"], gone["ended_at"]) == ("canceled", T0 + 31 * DAY)
    assert gone["cancellation_details"]["reason"] == "cancellation_requested"
    _, other = new_sub(sim)
    mark = len(sim.all_events())
    now = sim.cancel_subscription(other, comment="bye")
    assert types_since(sim, mark) == ["customer.subscription.deleted"]
    assert (now["status"], now["ended_at"]) == ("canceled", sim.now())
    assert now["cancellation_details"] == {"comment": "bye", "feedback": None, "reason": "cancellation_requested"}


def test_pause_and_resume(sim):
    _, sub_id = new_sub(sim)
    mark = len(sim.all_events())
    assert sim.pause_subscription(sub_id)["status"] == "paused"
    assert types_since(sim, mark) == ["customer.subscription.paused", "customer.subscription.updated"]
    mark = len(sim.all_events())
    sim.advance(60 * DAY)
    assert types_since(sim, mark) == []  # no renewals while paused
    resumed = sim.resume_subscription(sub_id)
    assert resumed["status"] == "active"
    assert resumed["items"]["data"][0]["current_period_start"] == sim.now()
    assert types_since(sim, mark)[:2] == ["customer.subscription.resumed", "customer.subscription.updated"]
    assert types_since(sim, mark)[-2:] == ["invoice.paid", "invoice.payment_succeeded"]


def test_checkout_sessions(sim):
    pay = sim.create_checkout_session(mode="payment", amount_total=5000, customer_email="c@example.com")
    assert (pay["status"], pay["payment_status"], pay["amount_total"]) == ("open", "unpaid", 5000)
    mark = len(sim.all_events())
    done = sim.complete_checkout_session(pay["id"])
    assert types_since(sim, mark) == ["customer.created", "checkout.session.completed"]
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    assert done["customer"].startswith("cus_")

    subscribe = sim.create_checkout_session(mode="subscription", customer=done["customer"])
    mark = len(sim.all_events())
    done = sim.complete_checkout_session(subscribe["id"])
    assert types_since(sim, mark) == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        "checkout.session.completed",
    ]
    assert done["subscription"].startswith("sub_")
    assert sim.get_subscription(done["subscription"])["status"] == "active"

    slow = sim.create_checkout_session(mode="payment", amount_total=700)
    first = sim.complete_checkout_session(slow["id"], async_payment=True)
    assert (first["status"], first["payment_status"]) == ("complete", "unpaid")
    ok = sim.checkout_async_payment(slow["id"], succeeded=True)
    assert ok["payment_status"] == "paid"
    assert sim.all_events()[-1]["type"] == "checkout.session.async_payment_succeeded"
    bad = sim.create_checkout_session(mode="payment", amount_total=700)
    sim.complete_checkout_session(bad["id"], async_payment=True)
    sim.checkout_async_payment(bad["id"], succeeded=False)
    assert sim.all_events()[-1]["type"] == "checkout.session.async_payment_failed"
    assert sim.all_events()[-1]["data"]["object"]["payment_status"] == "unpaid"

    gone = sim.create_checkout_session(mode="payment", amount_total=100)
    assert sim.expire_checkout_session(gone["id"])["status"] == "expired"
    assert sim.all_events()[-1]["type"] == "checkout.session.expired"
    later = sim.create_checkout_session(mode="payment", amount_total=100)
    mark = len(sim.all_events())
    sim.advance(DAY)
    assert types_since(sim, mark) == ["checkout.session.expired"]
    assert sim.get_checkout_session(later["id"])["status"] == "expired"


def test_customer_lifecycle(sim):
    cus, sub_id = new_sub(sim)
    mark = len(sim.all_events())
    sim.update_customer(cus, metadata={"plan": "x"})
    sim.delete_customer(cus)
    assert types_since(sim, mark) == ["customer.updated", "customer.subscription.deleted", "customer.deleted"]
    assert sim.get_customer(cus) == {"id": cus, "object": "customer", "deleted": True}
    assert sim.get_subscription(sub_id)["status"] == "canceled"


def test_ids_are_unique_and_prefixed(sim):
    out = sim.bulk_create(500)
    subs = out["subscriptions"]
    assert len(set(subs)) == 500
    assert all(s.startswith("sub_") and len(s) > 20 for s in subs)
    truth = sim.truth()
    assert len(truth["subscriptions"]) == len(truth["invoices"]) == 500
    assert sim.all_events() == []  # bulk creation emits nothing


def test_control_client_over_http(served):
    sim, url = served
    ctl = SimControl(url)
    cus = ctl.create_customer(email="z@example.com")["id"]
    sub = ctl.create_subscription(cus, trial_days=7)
    assert sub["status"] == "trialing"
    ctl.advance(days=8)
    assert ctl.now() == T0 + 8 * DAY
    assert ctl.truth(include=["subscriptions"])["subscriptions"][0]["status"] == "active"
    ctl.configure(dunning_end="unpaid", retry_schedule_days=[1])
    assert ctl.settings()["dunning_end"] == "unpaid"
    ctl.fail_next_payments(cus, until_new_card=True)
    ctl.advance(days=40)
    assert sim.get_subscription(sub["id"])["status"] == "unpaid"
    assert ctl.pay_open_invoice(sub["id"])["status"] == "paid"
    assert [e["type"] for e in ctl.events("customer.subscription.*")][-1] == "customer.subscription.updated"
    with pytest.raises(Exception, match="No such subscription"):
        ctl.pause("sub_nope")
    ctl.close()


def test_bulk_population_renews_quietly_unless_asked(sim):
    quiet = sim.bulk_create(3, spread_seconds=20 * DAY)["subscriptions"]
    loud = sim.bulk_create(2, quiet=False)["subscriptions"]
    before = {s: sim.get_subscription(s)["items"]["data"][0]["current_period_end"] for s in quiet + loud}
    assert all(end > T0 for end in before.values())
    sim.advance(32 * DAY)
    for sid in quiet + loud:
        sub = sim.get_subscription(sid)
        assert sub["items"]["data"][0]["current_period_start"] == before[sid]
        assert sim.get_invoice(sub["latest_invoice"])["status"] == "paid"
    renewed = {e["data"]["object"]["id"] for e in sim.all_events("customer.subscription.updated")}
    assert renewed == set(loud)


def test_invoice_list_and_dunning_left_past_due(served, client):
    sim, _ = served
    sim.configure(dunning_end="past_due", retry_schedule_days=[1])
    cus, sub_id = new_sub(sim)
    sim.fail_next_payments(cus, n=5)
    sim.advance(40 * DAY)
    assert sim.get_subscription(sub_id)["status"] == "past_due"
    invoices = client.v1.invoices.list({"subscription": sub_id})
    assert [i.billing_reason for i in invoices.data] == ["subscription_cycle", "subscription_create"]
    assert invoices.data[0].status == "open"
    assert invoices.data[0].next_payment_attempt is None
    assert [i.id for i in client.v1.invoices.list({"status": "paid", "customer": cus}).data] == [invoices.data[1].id]
