"""Settings: safe defaults, and a message naming the variable when one is wrong."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.settings_docs import variables
from worker.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones():
    settings = load_settings({})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.events_exchange == "orders"
    assert settings.events_queue == "recon.events"
    assert settings.rate_limit_per_minute == 1000
    assert settings.rate_limit_burst is None  # the whole per-minute budget at once
    assert settings.backfill_budget_share == 0.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECON_MAX_ATTEMPTS", "many"),
        ("RECON_MAX_ATTEMPTS", "0"),
        ("LOYALTY_RATE_LIMIT_PER_MINUTE", "-5"),
        ("LOYALTY_API_URL", "ftp://example"),
        ("RECON_LOG_LEVEL", "LOUD"),
        ("LOYALTY_RATE_LIMIT_PER_MINUTE", "10000000"),
        ("LOYALTY_RATE_LIMIT_BURST", "0"),
        ("RECON_BACKFILL_BUDGET_SHARE", "1.5"),
        ("RECON_BACKFILL_BUDGET_SHARE", "half"),
    ],
)
def test_a_bad_value_names_its_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_missing_credentials_are_explained_without_values():
    with pytest.raises(SettingsError, match="LOYALTY_API_USERNAME is not set"):
        load_settings({}).require_credentials()
    settings = load_settings({"LOYALTY_API_CLIENT_KEY": "k"})
    with pytest.raises(SettingsError, match="LOYALTY_API_CLIENT_SECRET"):
        settings.require_credentials()


@given(st.text(alphabet=string.ascii_letters + string.digits + "!@#$%", min_size=12, max_size=40))
def test_secrets_never_appear_in_repr_or_errors(password):
    settings = load_settings({"LOYALTY_API_USERNAME": "u", "LOYALTY_API_PASSWORD": password})
    assert settings.loyalty_api_password.get_secret_value() == password
    assert password not in repr(settings)
    with pytest.raises(SettingsError) as info:
        load_settings({"LOYALTY_API_PASSWORD": password, "RECON_MAX_ATTEMPTS": "x"})
    assert password not in str(info.value)
    assert "RECON_MAX_ATTEMPTS" in str(info.value)


def test_every_variable_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [v.name for v in variables() if f"`{v.name}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_given_variables_are_read_instead_of_the_process_environment(monkeypatch):
    monkeypatch.setenv("RECON_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("LOYALTY_BRAND_ID", "")  # empty: unset, as a shell leaves it
    assert load_settings().max_attempts == 9
    assert load_settings().loyalty_brand_id is None
    assert load_settings({}).max_attempts == 5
    assert load_settings({"RECON_MAX_ATTEMPTS": "7"}).max_attempts == 7


def test_a_replaced_value_is_checked_by_the_same_rules_and_secrets_stay_secret():
    settings = load_settings({}).replace(loyalty_api_password="s3cret-value", max_attempts=3)
    assert settings.max_attempts == 3
    assert settings.loyalty_api_password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings)
    with pytest.raises(SettingsError, match="RECON_MAX_ATTEMPTS"):
        settings.replace(max_attempts=0)


CLUSTER = "amqp://recon:pw-one@mq1:5672/recon;amqp://recon:pw-two@mq2:5672/recon"


def test_a_cluster_is_every_node_separated_by_semicolons_each_shown_masked():
    from worker.cli.broker import masked

    assert load_settings({"RECON_BROKER_URL": CLUSTER}).broker_url == CLUSTER
    shown = masked(CLUSTER)
    assert shown == "amqp://recon:**@mq1:5672/recon;amqp://recon:**@mq2:5672/recon"
    with pytest.raises(SettingsError, match="RECON_BROKER_URL"):
        load_settings({"RECON_BROKER_URL": CLUSTER + ";mq3:5672"})
