"""The one configuration reader: defaults, and malformed values refused in one line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from subsync import config


def test_defaults():
    settings = config.load({})
    assert settings.webhook_tolerance_s == 300
    assert settings.grace_period == timedelta(hours=72)
    assert settings.max_body_bytes == 1_048_576
    assert (settings.port, settings.web_threads) == (5000, config.DEFAULT_WEB_THREADS)
    assert settings.webhook_secrets == ()
    assert settings.dramatiq_prometheus is False


def test_secrets_are_comma_separated_and_trimmed():
    assert config.load({"STRIPE_WEBHOOK_SECRET": " whsec_a , whsec_b,"}).webhook_secrets == ("whsec_a", "whsec_b")


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_a_bad_webhook_tolerance_is_refused(value):
    with pytest.raises(config.ConfigError, match="STRIPE_WEBHOOK_TOLERANCE"):
        config.load({"STRIPE_WEBHOOK_TOLERANCE": value})


@pytest.mark.parametrize(("name", "value"), [("LOG_FORMAT", "xml"), ("WEB_CONCURRENCY", "0"), ("MAX_BODY_BYTES", "x")])
def test_other_malformed_values_are_refused_naming_the_variable(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.load({name: value})


def test_a_missing_webhook_secret_is_one_line():
    with pytest.raises(config.ConfigError) as refused:
        config.load({}).require_webhook_secrets()
    assert "\n" not in str(refused.value)
    assert "STRIPE_WEBHOOK_SECRET" in str(refused.value)
