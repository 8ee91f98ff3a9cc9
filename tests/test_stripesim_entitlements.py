"""Entitlements in the simulator: features, product features, active entitlements and their summary event."""

from __future__ import annotations

import pytest
import stripe

from stripesim import ADDON_MONTHLY_PRICE, SimControl, SimError, Simulator, start_in_thread

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86400
KEY = "sk_test_sim"
SUMMARY = "entitlements.active_entitlement_summary.updated"


@pytest.fixture
def served():
    sim = Simulator(start=T0, seed=5, api_key=KEY)
    url, shutdown = start_in_thread(sim)
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    yield sim, client, url
    shutdown()
    sim.close()


def summaries(sim: Simulator, mark: int = 0) -> list[dict]:
    return [e["data"] for e in sim.all_events()[mark:] if e["type"] == SUMMARY]


def keys_of(summary: dict) -> list[str]:
    return [ent["lookup_key"] for ent in summary["entitlements"]["data"]]


def test_features_and_product_features_over_http(served):
    sim, client, _ = served
    api = client.v1.entitlements.features.create({"lookup_key": "api", "name": "API access"})
    assert (api.object, api.active, api.lookup_key, api.livemode) == ("entitlements.feature", True, "api", False)
    assert api.id.startswith("feat_test_")
    sso = client.v1.entitlements.features.create({"lookup_key": "sso", "name": "SSO", "metadata": {"tier": "pro"}})
    assert [f.id for f in client.v1.entitlements.features.list().data] == [sso.id, api.id]
    assert [f.id for f in client.v1.entitlements.features.list({"lookup_key": "api"}).data] == [api.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.entitlements.features.create({"lookup_key": "api", "name": "again"})
    assert err.value.param == "lookup_key"
    attached = client.v1.products.features.create("prod_premium", {"entitlement_feature": api.id})
    assert attached.object == "product_feature"
    assert attached.entitlement_feature.id == api.id  # the whole feature, as Stripe returns it
    client.v1.products.features.create("prod_premium", {"entitlement_feature": sso.id})
    listed = client.v1.products.features.list("prod_premium")
    assert [pf.entitlement_feature.lookup_key for pf in listed.data] == ["sso", "api"]
    assert client.v1.products.features.retrieve("prod_premium", attached.id).id == attached.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.features.create("prod_premium", {"entitlement_feature": api.id})
    gone = client.v1.products.features.delete("prod_premium", attached.id)
    assert (gone.id, gone.deleted) == (attached.id, True)
    assert [pf.id for pf in client.v1.products.features.list("prod_premium").data] != [attached.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.products.features.retrieve("prod_premium", attached.id)
    assert err.value.http_status == 404
    archived = client.v1.entitlements.features.update(sso.id, {"active": False})
    assert archived.active is False
    assert [f.id for f in client.v1.entitlements.features.list().data] == [api.id]
    assert [f.id for f in client.v1.entitlements.features.list({"archived": True}).data] == [sso.id]
    assert sim.all_events() == []  # features have no events


def test_a_subscription_grants_its_products_features_until_it_ends(served):
    sim, client, _ = served
    api = sim.create_feature("api", "API access")["id"]
    sim.create_feature("unused", "Not sold")
    sim.attach_feature("prod_premium", api)
    cus = sim.create_customer()["id"]
    mark = len(sim.all_events())
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": "price_premium_monthly"}]})
    types = [e["type"] for e in sim.all_events()[mark:]]
    # granted once the first payment made it active, not while incomplete
    assert types[-2:] == ["customer.subscription.updated", SUMMARY]
    [granted] = summaries(sim, mark)
    summary = granted["object"]
    assert summary["object"] == "entitlements.active_entitlement_summary"
    assert summary["customer"] == cus
    assert summary["entitlements"]["has_more"] is False
    [ent] = summary["entitlements"]["data"]
    assert (ent["object"], ent["feature"], ent["lookup_key"]) == ("entitlements.active_entitlement", api, "api")
    assert granted["previous_attributes"]["entitlements"]["data"] == []
    listed = client.v1.entitlements.active_entitlements.list({"customer": cus, "expand": ["data.feature"]})
    assert [e.id for e in listed.data] == [ent["id"]]
    assert listed.data[0].feature.name == "API access"
    assert client.v1.entitlements.active_entitlements.retrieve(ent["id"]).lookup_key == "api"
    mark = len(sim.all_events())
    client.v1.subscriptions.cancel(sub.id)
    [revoked] = summaries(sim, mark)
    assert revoked["object"]["entitlements"]["data"] == []
    assert [e["lookup_key"] for e in revoked["previous_attributes"]["entitlements"]["data"]] == ["api"]
    assert client.v1.entitlements.active_entitlements.list({"customer": cus}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.entitlements.active_entitlements.retrieve(ent["id"])
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.entitlements.active_entitlements.list({})
    assert (err.value.code, err.value.param) == ("parameter_missing", "customer")


def test_the_summary_shows_the_first_ten(served):
    sim, client, _ = served
    keys = [f"feature-{n:02d}" for n in range(12)]
    for key in keys:
        sim.attach_feature("prod_premium", sim.create_feature(key, key.title())["id"])
    cus = sim.create_customer()["id"]
    sim.create_subscription(cus, trial_days=7)  # a trial grants at once
    [event] = summaries(sim)
    summary = event["object"]["entitlements"]
    assert (len(summary["data"]), summary["has_more"]) == (10, True)
    assert summary["url"] == f"/v1/customer/{cus}/entitlements"
    every = [
        e.lookup_key
        for e in client.v1.entitlements.active_entitlements.list({"customer": cus, "limit": 5}).auto_paging_iter()
    ]
    assert sorted(every) == keys
    assert [e["lookup_key"] for e in summary["data"]] == every[:10]  # the list's first page order
    assert sim.entitled_lookup_keys(cus) == keys


def test_items_added_and_removed_change_entitlements(served):
    sim, client, _ = served
    sim.attach_feature("prod_premium", sim.create_feature("api", "API")["id"])
    sim.attach_feature("prod_addon", sim.create_feature("support", "Priority support")["id"])
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)
    mark = len(sim.all_events())
    added = client.v1.subscription_items.create({"subscription": sub["id"], "price": ADDON_MONTHLY_PRICE})
    [grown] = summaries(sim, mark)
    assert sorted(keys_of(grown["object"])) == ["api", "support"]
    mark = len(sim.all_events())
    client.v1.subscription_items.delete(added.id)
    [shrunk] = summaries(sim, mark)
    assert keys_of(shrunk["object"]) == ["api"]
    mark = len(sim.all_events())
    sim.update_subscription_metadata(sub["id"], {"k": "v"})
    assert summaries(sim, mark) == []  # nothing changed, no event


def test_feature_changes_reach_existing_subscriptions_at_their_next_period(served):
    sim, _, _ = served
    api = sim.create_feature("api", "API")["id"]
    sso = sim.create_feature("sso", "SSO")["id"]
    sim.attach_feature("prod_premium", api)
    old = sim.create_customer()["id"]
    sim.create_subscription(old)
    sim.advance(DAY)
    mark = len(sim.all_events())
    sim.attach_feature("prod_premium", sso)
    sim.detach_feature("prod_premium", api)
    assert sim.all_events()[mark:] == []
    assert sim.entitled_lookup_keys(old) == ["api"]  # this period keeps what it started with
    new = sim.create_customer()["id"]
    sim.create_subscription(new)
    assert sim.entitled_lookup_keys(new) == ["sso"]  # a new subscription gets the product as it is
    mark = len(sim.all_events())
    sim.advance(30 * DAY)  # the old one renews on Feb 1
    [renewed] = summaries(sim, mark)
    assert renewed["object"]["customer"] == old
    assert keys_of(renewed["object"]) == ["sso"]
    assert sim.entitled_lookup_keys(old) == ["sso"]


def test_which_statuses_keep_entitlements(served):
    sim, _, _ = served
    sim.attach_feature("prod_premium", sim.create_feature("api", "API")["id"])
    failing = sim.create_customer()["id"]
    sim.fail_next_payments(failing, n=1)
    sim.create_subscription(failing)  # incomplete: nothing granted
    sim.advance(DAY)  # incomplete_expired
    assert sim.entitled_lookup_keys(failing) == []
    assert [s["object"]["customer"] for s in summaries(sim)] == []
    late = sim.create_customer()["id"]
    sub = sim.create_subscription(late)
    sim.fail_next_payments(late, until_new_card=True)
    sim.advance(31 * DAY + 3600)  # the renewal fails: past_due keeps access
    assert sim.get_subscription(sub["id"])["status"] == "past_due"
    assert sim.entitled_lookup_keys(late) == ["api"]
    sim.pause_subscription(sub["id"])
    assert sim.entitled_lookup_keys(late) == ["api"]  # paused keeps it too
    sim.resume_subscription(sub["id"])
    mark = len(sim.all_events())
    sim.advance(8 * DAY)  # dunning ends: canceled
    assert sim.get_subscription(sub["id"])["status"] == "canceled"
    [ended] = summaries(sim, mark)
    assert keys_of(ended["object"]) == []


def test_entitlements_are_per_account_and_over_sim_control(served):
    sim, client, url = served
    acct = sim.create_account()["id"]
    ctl = SimControl(url)
    feature = ctl.create_feature("api", "API", account=acct)
    ctl.attach_feature("prod_premium", feature["id"], account=acct)
    cus = sim.create_customer(account=acct)["id"]
    sim.create_subscription(cus, account=acct)
    assert ctl.active_entitlements(cus, account=acct)["lookup_keys"] == ["api"]
    [event] = [e for e in sim.all_events(account=acct) if e["type"] == SUMMARY]
    assert event["account"] == acct
    assert client.v1.entitlements.features.list().data == []
    listed = client.v1.entitlements.active_entitlements.list({"customer": cus}, options={"stripe_account": acct})
    assert [e.lookup_key for e in listed.data] == ["api"]
    with pytest.raises(SimError):
        sim.attach_feature("prod_premium", feature["id"])  # not the platform's feature
    ctl.close()
