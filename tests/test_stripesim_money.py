"""The simulator's money: payment intents, charges, invoice payments, refunds and disputes, over HTTP."""

from __future__ import annotations

import pytest
import requests
import stripe

from stripesim import BASIL, LEGACY, SimControl, SimError, Simulator, start_in_thread

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86400
KEY = "sk_test_sim"
PAYMENTS_PAID = "2025-06-30.basil"  # invoice_payment.paid exists from 2025-05-28.basil


@pytest.fixture
def served(request):
    version = getattr(request, "param", BASIL)
    sim = Simulator(start=T0, seed=11, api_key=KEY, api_version=version, payment_events=True)
    url, shutdown = start_in_thread(sim)
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    yield sim, client, url
    shutdown()
    sim.close()


def subscribe(sim: Simulator, client: stripe.StripeClient, price: str = "price_premium_monthly") -> tuple[str, str]:
    cus = sim.create_customer(email="m@example.com")["id"]
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": price}]})
    return cus, sub.id


def types_since(sim: Simulator, mark: int) -> list[str]:
    return [e["type"] for e in sim.all_events()[mark:]]


@pytest.mark.parametrize("served", [BASIL, PAYMENTS_PAID], indirect=True)
def test_a_paid_invoice_has_an_intent_a_charge_and_an_invoice_payment(served):
    sim, client, _ = served
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": "price_premium_monthly"}]})
    paid_event = ["invoice_payment.paid"] if sim.api_version == PAYMENTS_PAID else []
    assert types_since(sim, mark) == [
        "customer.subscription.created",
        "invoice.created",
        "payment_intent.created",
        "invoice.finalized",
        "charge.succeeded",
        "payment_intent.succeeded",
        *paid_event,
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    for removed in ("charge", "payment_intent", "paid", "payments"):
        assert removed not in inv  # basil: no charge/payment_intent/paid; payments only when expanded
    inv = client.v1.invoices.retrieve(sub.latest_invoice, {"expand": ["payments.data.payment.payment_intent"]})
    [payment] = inv.payments.data
    assert (payment.object, payment.status, payment.is_default) == ("invoice_payment", "paid", True)
    assert (payment.amount_requested, payment.amount_paid, payment.invoice) == (2999, 2999, inv.id)
    pi = payment.payment.payment_intent
    assert (pi.object, pi.status, pi.amount_received, pi.customer) == ("payment_intent", "succeeded", 2999, cus)
    assert "invoice" not in pi
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.paid, charge.amount, charge.payment_intent) == ("succeeded", True, 2999, pi.id)
    assert "invoice" not in charge  # removed in basil
    assert "refunds" not in charge  # not expanded by default since 2022-11-15
    assert charge.balance_transaction.startswith("txn_")
    listed = client.v1.invoice_payments.list({"invoice": inv.id})
    assert [p.id for p in listed.data] == [payment.id]
    by_intent = client.v1.invoice_payments.list({"payment": {"type": "payment_intent", "payment_intent": pi.id}})
    assert [p.id for p in by_intent.data] == [payment.id]
    assert client.v1.invoice_payments.retrieve(payment.id).status == "paid"
    succeeded = next(e for e in sim.all_events() if e["type"] == "charge.succeeded")
    assert succeeded["data"]["object"]["id"] == charge.id


def test_payments_have_their_own_events_by_default_as_on_stripe():
    sim = Simulator(start=T0, seed=11)
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sim.create_subscription(cus)
    types = [e["type"] for e in sim.all_events()[mark:]]
    assert types.index("payment_intent.created") < types.index("invoice.finalized")
    assert types.index("charge.succeeded") < types.index("invoice.paid")


def test_payments_are_silent_when_their_events_are_off():
    sim = Simulator(start=T0, seed=11, payment_events=False)
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sub = sim.create_subscription(cus)
    assert [e["type"] for e in sim.all_events()[mark:]] == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    [charge] = sim.list_charges(customer=cus)["data"]  # the records are there all the same
    [payment] = sim.list_invoice_payments(invoice=sub["latest_invoice"])["data"]
    assert payment["payment"]["payment_intent"] == charge["payment_intent"]
    assert sim.settings()["payment_events"] is False
    sim.configure(payment_events=True)
    mark = len(sim.all_events())
    sim.refund(charge["id"])  # refunds and disputes always have their events
    sim.create_subscription(cus, price="price_premium_yearly")
    assert "charge.succeeded" in [e["type"] for e in sim.all_events()[mark:]]
    assert [e["type"] for e in sim.all_events()[mark : mark + 2]] == ["charge.refunded", "refund.created"]
    sim.close()


@pytest.mark.parametrize("served", [LEGACY], indirect=True)
def test_before_basil_the_invoice_names_its_charge_and_the_charge_its_invoice(served):
    sim, client, url = served
    cus, sub_id = subscribe(sim, client)
    inv = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub_id).latest_invoice)
    assert inv.paid is True
    charge = client.v1.charges.retrieve(inv.charge)
    assert (charge.invoice, charge.payment_intent, charge.customer) == (inv.id, inv.payment_intent, cus)
    assert client.v1.payment_intents.retrieve(inv.payment_intent).invoice == inv.id
    assert "invoice_payment.paid" not in [e["type"] for e in sim.all_events()]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoice_payments.list({"invoice": inv.id})
    assert err.value.http_status == 404  # no such object before basil
    resp = requests.get(f"{url}/v1/invoice_payments", auth=(KEY, ""), timeout=5)
    assert resp.json()["error"]["message"] == "Unrecognized request URL (GET: /v1/invoice_payments)."


def test_failed_attempts_are_failed_charges_on_the_invoice_intent(served):
    sim, client, _ = served
    cus, sub_id = subscribe(sim, client)
    sim.fail_next_payments(cus, n=2)
    mark = len(sim.all_events())
    sim.advance(31 * DAY + 3600)
    assert types_since(sim, mark) == [
        "customer.subscription.updated",
        "invoice.created",
        "payment_intent.created",
        "invoice.finalized",
        "charge.failed",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    failed = sim.all_events()[mark + 5]["data"]["object"]
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "card_declined"
    sim.advance(3 * DAY)  # the first retry fails too
    sim.advance(2 * DAY)  # the second succeeds
    inv_id = client.v1.subscriptions.retrieve(sub_id).latest_invoice
    intent = client.v1.invoice_payments.list({"invoice": inv_id}).data[0].payment.payment_intent
    attempts = client.v1.charges.list({"payment_intent": intent}).data
    assert [(c.status, c.failure_code) for c in attempts] == [
        ("succeeded", None),
        ("failed", "card_declined"),
        ("failed", "card_declined"),
    ]
    assert client.v1.payment_intents.retrieve(intent).latest_charge == attempts[0].id
    assert len(client.v1.charges.list({"customer": cus}).data) == 4  # with the first invoice's


def test_voided_invoice_cancels_its_payment(served):
    sim, client, _ = served
    cus = sim.create_customer()["id"]
    sim.fail_next_payments(cus, n=1)
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": "price_premium_monthly"}]})
    assert sub.status == "incomplete"
    sim.advance(DAY)  # incomplete_expired: the invoice is voided
    [payment] = client.v1.invoice_payments.list({"invoice": sub.latest_invoice}).data
    assert (payment.status, payment.amount_paid) == ("canceled", None)
    assert payment.status_transitions.canceled_at == T0 + 23 * 3600
    assert client.v1.payment_intents.retrieve(payment.payment.payment_intent).status == "canceled"
    assert [p.id for p in client.v1.invoice_payments.list({"status": "canceled"}).data] == [payment.id]


def test_refunds_partial_then_full(served):
    sim, client, _ = served
    _, sub_id = subscribe(sim, client)
    inv = sim.get_invoice(sim.get_subscription(sub_id)["latest_invoice"])
    charge = client.v1.charges.list().data[0]
    mark = len(sim.all_events())
    first = client.v1.refunds.create({"charge": charge.id, "amount": 1000, "reason": "requested_by_customer"})
    assert (first.object, first.status, first.amount, first.charge) == ("refund", "succeeded", 1000, charge.id)
    refunded, created = sim.all_events()[mark:]
    assert (refunded["type"], created["type"]) == ("charge.refunded", "refund.created")
    assert refunded["data"]["object"]["amount_refunded"] == 1000
    assert refunded["data"]["object"]["refunded"] is False
    assert refunded["data"]["previous_attributes"] == {"amount_refunded": 0}
    assert created["data"]["object"]["id"] == first.id
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create({"charge": charge.id, "amount": 5000})
    assert (err.value.code, err.value.param) == ("amount_too_large", "amount")
    assert err.value.user_message == "Refund amount ($50.00) is greater than unrefunded amount on charge ($19.99)"
    rest = sim.refund(inv["id"])  # the invoice's charge, what is left
    assert rest["amount"] == 1999
    again = client.v1.charges.retrieve(charge.id, {"expand": ["refunds"]})
    assert (again.amount_refunded, again.refunded) == (2999, True)
    assert [r.id for r in again.refunds.data] == [rest["id"], first.id]  # newest first
    full = sim.all_events()[-2]["data"]
    assert full["previous_attributes"] == {"amount_refunded": 1000, "refunded": False}
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create({"payment_intent": charge.payment_intent})
    assert err.value.code == "charge_already_refunded"
    assert [r.id for r in client.v1.refunds.list({"charge": charge.id}).data] == [rest["id"], first.id]
    assert client.v1.refunds.retrieve(first.id).reason == "requested_by_customer"


def test_a_pending_refund_succeeds_or_fails_later(served):
    sim, client, _ = served
    _, sub_id = subscribe(sim, client)
    inv_id = sim.get_subscription(sub_id)["latest_invoice"]
    slow = sim.refund(inv_id, 1000, pending=True)
    assert slow["status"] == "pending"
    assert client.v1.charges.retrieve(slow["charge"]).amount_refunded == 1000  # a pending refund counts
    mark = len(sim.all_events())
    sim.settle_refund(slow["id"])
    [updated] = sim.all_events()[mark:]
    assert updated["type"] == "refund.updated"
    assert updated["data"]["object"]["status"] == "succeeded"
    assert updated["data"]["previous_attributes"]["status"] == "pending"
    lost = sim.refund(inv_id, 500, pending=True)
    mark = len(sim.all_events())
    sim.settle_refund(lost["id"], succeeded=False, failure_reason="expired_or_canceled_card")
    assert types_since(sim, mark) == ["refund.updated", "refund.failed"]
    failed = client.v1.refunds.retrieve(lost["id"])
    assert (failed.status, failed.failure_reason) == ("failed", "expired_or_canceled_card")
    assert failed.failure_balance_transaction.startswith("txn_")
    assert client.v1.charges.retrieve(slow["charge"]).amount_refunded == 1000  # the failed one gave back
    with pytest.raises(SimError, match="not pending"):
        sim.settle_refund(lost["id"])


@pytest.mark.parametrize("served", [LEGACY], indirect=True)
def test_before_acacia_a_card_refund_has_no_refund_events(served):
    sim, client, _ = served
    _, sub_id = subscribe(sim, client)
    inv_id = sim.get_subscription(sub_id)["latest_invoice"]
    mark = len(sim.all_events())
    refund = sim.refund(inv_id, pending=True)
    sim.settle_refund(refund["id"])
    assert types_since(sim, mark) == ["charge.refunded", "charge.refund.updated"]
    assert "refunds" not in sim.all_events()[mark]["data"]["object"]  # 2024-06-20 is after 2022-11-15


def test_disputes_lost_and_won(served):
    sim, client, _ = served
    cus, sub_id = subscribe(sim, client)
    inv_id = sim.get_subscription(sub_id)["latest_invoice"]
    charge = client.v1.charges.list({"customer": cus}).data[0]
    mark = len(sim.all_events())
    opened = sim.dispute(charge.id, reason="fraudulent")
    assert types_since(sim, mark) == ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    assert (opened["status"], opened["amount"], opened["charge"]) == ("needs_response", 2999, charge.id)
    [withdrawal] = opened["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["net"]) == (-2999, 1500, -4499)
    assert client.v1.charges.retrieve(charge.id).disputed is True
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create({"charge": charge.id})
    assert err.value.code == "charge_disputed"
    mark = len(sim.all_events())
    answered = client.v1.disputes.update(opened["id"], {"evidence": {"uncategorized_text": "They used it"}})
    assert (answered.status, answered.evidence.uncategorized_text) == ("under_review", "They used it")
    [updated] = sim.all_events()[mark:]
    assert updated["type"] == "charge.dispute.updated"
    assert updated["data"]["previous_attributes"]["status"] == "needs_response"
    mark = len(sim.all_events())
    won = sim.close_dispute(opened["id"], won=True)
    assert types_since(sim, mark) == ["charge.dispute.closed", "charge.dispute.funds_reinstated"]
    assert won["status"] == "won"
    assert [t["amount"] for t in won["balance_transactions"]] == [-2999, 2999]
    assert sim.all_events()[mark]["data"]["object"]["status"] == "won"

    _, other = subscribe(sim, client)
    second = sim.dispute(sim.get_subscription(other)["latest_invoice"], amount=1000, reason="product_not_received")
    mark = len(sim.all_events())
    lost = client.v1.disputes.close(second["id"])  # accepting it
    assert types_since(sim, mark) == ["charge.dispute.closed"]
    assert lost.status == "lost"
    assert [d.id for d in client.v1.disputes.list().data] == [second["id"], opened["id"]]
    assert [d.id for d in client.v1.disputes.list({"charge": charge.id}).data] == [opened["id"]]
    with pytest.raises(SimError, match="already disputed"):
        sim.dispute(inv_id)


def test_an_inquiry_withdraws_nothing(served):
    sim, client, _ = served
    cus, _ = subscribe(sim, client)
    charge = client.v1.charges.list({"customer": cus}).data[0]
    mark = len(sim.all_events())
    inquiry = sim.dispute(charge.id, reason="general", inquiry=True)
    assert types_since(sim, mark) == ["charge.dispute.created"]
    assert (inquiry["status"], inquiry["balance_transactions"]) == ("warning_needs_response", [])
    assert sim.refund(charge.id)["status"] == "succeeded"  # an inquiry leaves the charge refundable
    assert sim.close_dispute(inquiry["id"], won=True)["status"] == "warning_closed"


def test_payment_mode_checkout_is_paid_by_its_own_intent(served):
    sim, client, _ = served
    paid = sim.create_checkout_session(mode="payment", amount_total=5000, customer_email="c@example.com")
    mark = len(sim.all_events())
    done = sim.complete_checkout_session(paid["id"])
    assert types_since(sim, mark) == [
        "customer.created",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    intent = client.v1.payment_intents.retrieve(done["payment_intent"])
    assert (intent.status, intent.amount, intent.customer) == ("succeeded", 5000, done["customer"])
    assert client.v1.charges.retrieve(intent.latest_charge).amount == 5000

    slow = sim.create_checkout_session(mode="payment", amount_total=700)
    mark = len(sim.all_events())
    first = sim.complete_checkout_session(slow["id"], async_payment=True)
    assert types_since(sim, mark)[-3:] == ["charge.pending", "payment_intent.processing", "checkout.session.completed"]
    assert client.v1.payment_intents.retrieve(first["payment_intent"]).status == "processing"
    mark = len(sim.all_events())
    sim.checkout_async_payment(slow["id"], succeeded=False)
    assert types_since(sim, mark) == [
        "charge.failed",
        "payment_intent.payment_failed",
        "checkout.session.async_payment_failed",
    ]
    assert client.v1.charges.list({"payment_intent": first["payment_intent"]}).data[0].status == "failed"


def test_lists_page_and_filter_by_created(served):
    sim, client, _ = served
    made = []
    for _ in range(5):
        cus, _sub = subscribe(sim, client)
        made.append(client.v1.charges.list({"customer": cus}).data[0].id)
        sim.advance(DAY)
    every = [c.id for c in client.v1.charges.list({"limit": 2}).auto_paging_iter()]
    assert every == list(reversed(made))
    recent = client.v1.charges.list({"created": {"gte": T0 + 3 * DAY}})
    assert [c.id for c in recent.data] == list(reversed(made[3:]))
    assert client.v1.payment_intents.list({"created": {"lt": T0 + DAY}}).data[0].latest_charge == made[0]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.charges.retrieve("ch_missing")
    assert (err.value.http_status, err.value.code) == (404, "resource_missing")


def test_money_is_per_account(served):
    sim, client, _ = served
    acct = sim.create_account()["id"]
    cus = sim.create_customer(account=acct)["id"]
    sub = sim.create_subscription(cus, account=acct)
    charges = client.v1.charges.list(options={"stripe_account": acct}).data
    assert [c.customer for c in charges] == [cus]
    assert client.v1.charges.list().data == []
    refund = sim.refund(sub["latest_invoice"], account=acct)
    assert client.v1.refunds.retrieve(refund["id"], options={"stripe_account": acct}).status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.retrieve(refund["id"])
    assert {e.get("account") for e in sim.all_events("charge.*", account=acct)} == {acct}


def test_refunds_and_disputes_over_sim_control(served):
    _, client, url = served
    ctl = SimControl(url)
    cus = ctl.create_customer(email="ctl@example.com")["id"]
    sub = ctl.create_subscription(cus)
    [charge] = ctl.charges(customer=cus)["data"]
    refund = ctl.refund(sub["latest_invoice"], 500, pending=True)
    assert ctl.settle_refund(refund["id"], succeeded=False)["status"] == "failed"
    opened = ctl.dispute(charge["id"], reason="duplicate")
    assert ctl.update_dispute(opened["id"], evidence={"duplicate_charge_id": "ch_other"})["status"] == "under_review"
    assert ctl.close_dispute(opened["id"], won=True)["status"] == "won"
    assert client.v1.charges.retrieve(charge["id"]).disputed is True
    ctl.close()
