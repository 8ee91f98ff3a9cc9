"""/metrics: counters move when events arrive, apply and fail; shared state is read at scrape time."""

from __future__ import annotations

import pytest
from helpers import apply, make_event, post_event, subscription_obj
from prometheus_client.parser import text_string_to_metric_families


def scrape(client):
    answer = client.get("/metrics")
    assert answer.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_deliveries_count_by_outcome_and_the_ack_latency_is_observed(client, conn, broker):
    before = scrape(client)
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    post_event(client, event)
    post_event(client, event, secret="whsec_wrong")
    client.post("/webhooks/stripe", data="{}")
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("subsync_webhook_deliveries_total", outcome="accepted") == 1
    assert moved("subsync_webhook_deliveries_total", outcome="duplicate") == 1
    assert moved("subsync_webhook_deliveries_total", outcome="invalid_signature") == 1
    assert moved("subsync_webhook_deliveries_total", outcome="missing_signature") == 1
    assert moved("subsync_webhook_ack_seconds_count") == 2
    # every rejection code is there from the start, at its count
    assert ("subsync_webhook_deliveries_total", (("outcome", "payload_too_large"),)) in after


def test_applied_and_failed_counters_move_by_type(client, conn, broker, broken_subscriptions_table):
    ok = make_event("invoice.upcoming", {"object": "invoice", "id": None})
    bad = make_event("customer.subscription.created", subscription_obj())
    post_event(client, ok)
    post_event(client, bad)
    before = scrape(client)
    assert apply(ok["id"]) == "processed"
    assert apply(bad["id"]) == "failed"
    after = scrape(client)

    applied = ("subsync_events_applied_total", {"type": "invoice.upcoming", "outcome": "processed"})
    failed = ("subsync_events_failed_total", {"type": "customer.subscription.created"})
    assert value(after, applied[0], **applied[1]) - value(before, applied[0], **applied[1]) == 1
    assert value(after, failed[0], **failed[1]) - value(before, failed[0], **failed[1]) == 1
    assert value(after, "subsync_stored_events", status="failed") == 1


def test_queue_depth_backlog_and_oldest_unprocessed_age_are_read_at_scrape_time(client, conn, broker):
    empty = scrape(client)
    assert value(empty, "subsync_queue_depth") == 0
    assert value(empty, "subsync_oldest_unprocessed_event_age_seconds") == 0
    assert value(empty, "subsync_scrape_source_up", source="postgresql") == 1
    assert value(empty, "subsync_scrape_source_up", source="redis") == 1

    events = [make_event("customer.subscription.created", subscription_obj(f"sub_{n}")) for n in range(3)]
    for event in events:
        post_event(client, event)
    ten_minutes_ago = "UPDATE stripe_events SET received_at = now() - interval '10 minutes' WHERE id = %s"
    conn.execute(ten_minutes_ago, (events[0]["id"],))
    conn.execute("UPDATE stripe_events SET status = 'processing' WHERE id = %s", (events[1]["id"],))
    broker.client.rpush(f"{broker.namespace}:stripe_events.DQ", "a-delayed-retry")

    samples = scrape(client)
    assert value(samples, "subsync_queue_depth") == 4
    assert value(samples, "subsync_queue_delayed_messages") == 1
    assert value(samples, "subsync_stored_events", status="received") == 2
    assert value(samples, "subsync_stored_events", status="processing") == 1
    assert value(samples, "subsync_stored_events", status="failed") == 0
    assert 600 <= value(samples, "subsync_oldest_unprocessed_event_age_seconds") < 700


def test_reconciliation_figures_come_from_the_newest_run(client, conn, broker):
    assert "subsync_reconciliation_last_run" not in {name for name, _ in scrape(client)}
    conn.execute(
        """INSERT INTO reconciliation_runs (started_at, finished_at, status, scanned, drifted, fixed)
           VALUES (now() - interval '1 day', now() - interval '1 day', 'succeeded', 10, 1, 1),
                  (now() - interval '1 hour', now() - interval '1 hour', 'failed', 500, 7, 3)"""
    )
    samples = scrape(client)
    assert value(samples, "subsync_reconciliation_last_run", figure="scanned", dry_run="false") == 500
    assert value(samples, "subsync_reconciliation_last_run", figure="drifted", dry_run="false") == 7
    assert value(samples, "subsync_reconciliation_last_run_status", status="failed") == 1
    assert value(samples, "subsync_reconciliation_last_run_status", status="succeeded") == 0
    started = value(samples, "subsync_reconciliation_last_run_start_timestamp_seconds")
    success = value(samples, "subsync_reconciliation_last_success_timestamp_seconds")
    assert started - success == pytest.approx(23 * 3600, abs=60)


def test_metrics_still_answer_when_redis_is_down(client, conn, broker, redis_down):
    samples = scrape(client)
    assert value(samples, "subsync_scrape_source_up", source="redis") == 0
    assert value(samples, "subsync_scrape_source_up", source="postgresql") == 1
    assert ("subsync_queue_depth", ()) not in samples


def test_dramatiqs_worker_metrics_are_on_only_for_the_dramatiq_command_when_asked():
    from subsync import config
    from worker.middleware import worker_metrics_enabled

    def enabled(env, program):
        return worker_metrics_enabled(config.load(env), program)

    assert enabled({"DRAMATIQ_PROMETHEUS": "1"}, "/app/.venv/bin/dramatiq")
    assert not enabled({}, "/app/.venv/bin/dramatiq")
    assert not enabled({"DRAMATIQ_PROMETHEUS": "0"}, "/app/.venv/bin/dramatiq")
    assert not enabled({"DRAMATIQ_PROMETHEUS": "1"}, "/app/.venv/bin/gunicorn")
    assert not enabled({"DRAMATIQ_PROMETHEUS": "1"}, "/app/.venv/bin/flask")


def test_readyz_and_metrics_answer_in_bounded_time_with_redis_stalled_and_deliveries_go_on(app, conn, broker):
    import socket
    import threading
    import time

    from helpers import REDIS_PROXY

    # A server that takes connections (in the kernel's backlog) and never answers.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    real = REDIS_PROXY.target
    REDIS_PROXY.retarget(*blackhole.getsockname())
    took: dict[str, list[float]] = {"/readyz": [], "/metrics": []}

    def probe(path: str) -> None:
        began = time.monotonic()
        app.test_client().get(path)
        took[path].append(time.monotonic() - began)

    try:
        probes = [threading.Thread(target=probe, args=(path,)) for path in ("/readyz", "/metrics") * 4]
        for thread in probes:
            thread.start()
        began = time.monotonic()
        response = post_event(app.test_client(), make_event(), wait_for_send=False)
        ack = time.monotonic() - began
        for thread in probes:
            thread.join(20)
    finally:
        blackhole.close()
        REDIS_PROXY.retarget(*real)
    assert response.status_code == 200
    # Before, each of these waited out the Redis client's timeouts and retries: 15 s.
    assert max(took["/readyz"] + took["/metrics"]) < 2.5
    assert ack < 1.0
