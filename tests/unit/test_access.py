"""The access table and owed_amount (docs/interface.md, "Access")."""

from datetime import UTC, datetime, timedelta

import pytest

from subsync.access import (
    ACCESS_RANKING,
    Access,
    access_for,
    access_ranking_sql,
    best_access,
    owed_amount,
    time_dependent,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=72)
LATER = NOW + timedelta(days=10)
EARLIER = NOW - timedelta(days=10)


@pytest.mark.parametrize(
    ("status", "period_end", "reason", "expected"),
    [
        ("trialing", LATER, None, Access.FULL),
        ("trialing", EARLIER, None, Access.FULL),
        ("active", LATER, None, Access.FULL),
        ("active", None, None, Access.FULL),
        ("active", NOW - timedelta(hours=1), None, Access.GRACE),
        ("active", NOW - GRACE - timedelta(seconds=1), None, Access.RESTRICTED),
        ("past_due", LATER, None, Access.RESTRICTED),
        ("past_due", EARLIER, None, Access.RESTRICTED),
        ("unpaid", LATER, None, Access.SUSPENDED),
        ("canceled", EARLIER, "payment_failed", Access.SUSPENDED),
        ("incomplete_expired", EARLIER, "payment_failed", Access.SUSPENDED),
        ("canceled", EARLIER, "cancellation_requested", Access.NONE),
        ("canceled", EARLIER, None, Access.NONE),
        ("incomplete_expired", EARLIER, None, Access.NONE),
        ("incomplete", LATER, None, Access.NONE),
        ("paused", LATER, None, Access.NONE),
        ("some_future_status", LATER, None, Access.NONE),
    ],
)
def test_access_table(status, period_end, reason, expected):
    assert access_for(status, period_end, reason, NOW, GRACE) is expected


def test_period_end_is_exclusive_and_grace_end_too():
    end = NOW
    assert access_for("active", end, None, end - timedelta(microseconds=1), GRACE) is Access.FULL
    assert access_for("active", end, None, end, GRACE) is Access.GRACE
    assert access_for("active", end, None, end + GRACE - timedelta(microseconds=1), GRACE) is Access.GRACE
    assert access_for("active", end, None, end + GRACE, GRACE) is Access.RESTRICTED


def test_zero_grace_goes_straight_to_restricted():
    assert access_for("active", NOW, None, NOW, timedelta(0)) is Access.RESTRICTED


@pytest.mark.parametrize(
    ("status", "access", "expected"),
    [
        ("active", Access.FULL, True),
        ("active", Access.GRACE, True),
        ("active", Access.RESTRICTED, False),
        ("past_due", Access.RESTRICTED, False),
        ("trialing", Access.FULL, False),
        ("canceled", Access.NONE, False),
    ],
)
def test_time_dependent(status, access, expected):
    assert time_dependent(status, access) is expected


START = datetime(2025, 2, 1, tzinfo=UTC)


def test_contract_example_30_days_half_of_2999():
    start = datetime(2025, 4, 1, tzinfo=UTC)
    assert owed_amount(2999, start, start + timedelta(days=30), start + timedelta(days=15)) == 1500


@pytest.mark.parametrize(
    ("days", "used", "expected"),
    [
        (28, 7, 750),  # 3000 * 7/28 = 750 exactly
        (28, 14, 1500),
        (29, 10, 1034),  # 1034.48...
        (30, 10, 1000),
        (31, 10, 968),  # 967.74... -> 968
        (31, 15, 1452),  # 1451.61... -> 1452
    ],
)
def test_month_lengths(days, used, expected):
    end = START + timedelta(days=days)
    assert owed_amount(3000, START, end, START + timedelta(days=used)) == expected


def test_yearly_price():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime(2026, 1, 1, tzinfo=UTC)
    # 24900 * 100/365 = 6821.917... -> 6822
    assert owed_amount(24900, start, end, start + timedelta(days=100)) == 6822
    # A leap year has 366 days: 24900 * 100/366 = 6803.27 -> 6803
    assert (
        owed_amount(
            24900,
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
            datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=100),
        )
        == 6803
    )


def test_rounding_exactly_at_half_goes_up_and_just_below_goes_down():
    end = START + timedelta(seconds=2)
    assert owed_amount(1, START, end, START + timedelta(seconds=1)) == 1  # 0.5 -> 1
    assert owed_amount(3, START, end, START + timedelta(seconds=1)) == 2  # 1.5 -> 2
    end = START + timedelta(days=30)
    just_before_half = START + timedelta(days=15) - timedelta(microseconds=1)
    assert owed_amount(2999, START, end, just_before_half) == 1499


def test_no_float_error_on_large_amounts():
    end = START + timedelta(days=3)
    # A third of 10**17 is ...333.33: a float cannot even hold the amount exactly.
    assert owed_amount(10**17, START, end, START + timedelta(days=1)) == 10**17 // 3
    # Two thirds of it is ...666.67: up.
    assert owed_amount(10**17, START, end, START + timedelta(days=2)) == 2 * 10**17 // 3 + 1


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (START - timedelta(days=5), 0),
        (START, 0),
        (START + timedelta(days=30), 2999),
        (START + timedelta(days=90), 2999),
    ],
)
def test_share_is_clamped(ended, expected):
    assert owed_amount(2999, START, START + timedelta(days=30), ended) == expected


def test_zero_length_period():
    assert owed_amount(500, START, START, START) == 500
    assert owed_amount(500, START, START, START - timedelta(seconds=1)) == 0


def test_the_ranking_holds_every_access_value_once_best_first():
    assert sorted(ACCESS_RANKING) == sorted(Access)
    assert len(set(ACCESS_RANKING)) == len(ACCESS_RANKING)
    assert ACCESS_RANKING[0] == Access.FULL
    assert ACCESS_RANKING[-1] == Access.NONE


@pytest.mark.parametrize(
    ("accesses", "expected"),
    [
        ([], Access.NONE),
        ([Access.NONE], Access.NONE),
        ([Access.SUSPENDED, Access.NONE], Access.SUSPENDED),
        ([Access.NONE, Access.RESTRICTED, Access.SUSPENDED], Access.RESTRICTED),
        ([Access.RESTRICTED, Access.GRACE], Access.GRACE),
        ([Access.GRACE, Access.FULL, Access.SUSPENDED], Access.FULL),
        ([Access.SUSPENDED, Access.SUSPENDED], Access.SUSPENDED),
    ],
)
def test_a_customer_has_the_best_access_of_its_subscriptions(accesses, expected):
    assert best_access(accesses) == expected
    assert best_access(reversed(accesses)) == expected


def test_the_sql_ranking_is_the_ranking():
    assert access_ranking_sql() == "ARRAY['full', 'grace', 'restricted', 'suspended', 'none']"
