"""ApiSettings: CITYGW_* environment variables, and clear refusals of nonsense naming the setting,
where its value came from and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import ApiSettings, SettingsError, load_settings, redact_url


def test_defaults() -> None:
    settings = load_settings()
    assert settings.store_url == "sqlite:///var/citygw.sqlite"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.cors_origins == ()
    assert settings.feed_max_vehicle_age_s == 90.0
    assert settings.feed_cache_max_age_s == 5
    assert (settings.query_max_points, settings.query_max_windows) == (100_000, 10_000)


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_STORE_URL", "influxdb://citygw:secret@influx.internal:8086/citygw")
    monkeypatch.setenv("CITYGW_CORS_ORIGINS", "https://maps.example.org, http://localhost:5173")
    monkeypatch.setenv("CITYGW_FEED_MAX_VEHICLE_AGE_S", "120")
    monkeypatch.setenv("CITYGW_API_PORT", "9000")
    monkeypatch.setenv("CITYGW_INFLUX_TOKEN", "t0ken")
    settings = load_settings()
    assert settings.store_url == "influxdb://citygw:secret@influx.internal:8086/citygw"
    assert settings.cors_origins == ("https://maps.example.org", "http://localhost:5173")
    assert settings.feed_max_vehicle_age_s == 120.0
    assert settings.api_port == 9000
    assert settings.influx_token is not None
    assert settings.influx_token.get_secret_value() == "t0ken"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_STORE_URL", "sqlite:///from/env.sqlite")
    assert load_settings(store_url="sqlite:///given.sqlite").store_url == "sqlite:///given.sqlite"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        (
            "CITYGW_FEED_MAX_VEHICLE_AGE_S",
            "-1",
            "feed_max_vehicle_age_s (environment CITYGW_FEED_MAX_VEHICLE_AGE_S): Input should be greater "
            "than 0; fix: change or unset CITYGW_FEED_MAX_VEHICLE_AGE_S",
        ),
        ("CITYGW_FEED_MAX_VEHICLE_AGE_S", "soon", "CITYGW_FEED_MAX_VEHICLE_AGE_S"),
        ("CITYGW_STORE_URL", "postgres://db/citygw", "unknown store scheme 'postgres'"),
        ("CITYGW_STORE_URL", "sqlite://", "has no file path"),
        ("CITYGW_STORE_URL", "influxdb:///citygw", "has no host"),
        ("CITYGW_CORS_ORIGINS", "https://maps.example.org/app", "not an origin"),
        ("CITYGW_CORS_ORIGINS", "maps.example.org", "scheme://host[:port]"),
        ("CITYGW_API_PORT", "70000", "CITYGW_API_PORT"),
        ("CITYGW_QUERY_MAX_POINTS", "0", "CITYGW_QUERY_MAX_POINTS"),
    ],
)
def test_nonsense_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert words in str(raised.value)
    assert variable in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        (
            "CITYGW_STORE_URL",
            "postgres://citygw:s3cret@db:5432/citygw?token=t0ken",
            "'postgres://db:5432/citygw'",
        ),
        ("CITYGW_STORE_URL", "influxdb://citygw:s3cret@/citygw?token=t0ken", "'influxdb:///citygw'"),
        (
            "CITYGW_ALERT_WEBHOOK_URL",
            "ftp://hook:s3cret@scada.example/x?token=t0ken",
            "'ftp://scada.example/…'",  # a webhook's path may be its secret
        ),
        (
            "CITYGW_OIDC_JWKS_URL",
            "ldap://sso:s3cret@sso.example/certs?token=t0ken",
            "'ldap://sso.example/certs'",
        ),
    ],
)
def test_a_refused_url_is_shown_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, shown: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert shown in str(raised.value)
    with pytest.raises(ValidationError) as invalid:
        ApiSettings()  # as create_app makes them
    for text in (str(raised.value), str(invalid.value)):
        assert "s3cret" not in text
        assert "t0ken" not in text


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://hook:s3cret@scada.example:8443/x/y?token=t0ken#frag", "https://scada.example:8443/x/y"),
        ("https://hook@scada.example/x", "https://scada.example/x"),
        ("https://scada.example/x", "https://scada.example/x"),
        ("influxdb2://:t0ken@[::1]:8086/?org=city&bucket=b", "influxdb2://[::1]:8086/"),
        ("sqlite:///var/citygw.sqlite", "sqlite:///var/citygw.sqlite"),
        ("scada.example/x?token=t0ken", "scada.example/x"),
        ("http://[::1/x", "<unparseable URL>"),
        ("postgres ql://u:s3cret@db.example/citygw", "db.example/citygw"),  # no scheme urlsplit accepts
    ],
)
def test_redact_url_keeps_scheme_host_and_path_only(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXXsecret", "https://hooks.slack.com/…"),
        ("https://scada.example/", "https://scada.example/"),
        ("hooks.example/services/secret", "hooks.example/…"),
    ],
)
def test_a_webhook_url_is_shown_without_its_path(url: str, redacted: str) -> None:
    assert redact_url(url, keep_path=False) == redacted


def test_typos_in_arguments_are_refused() -> None:
    with pytest.raises(SettingsError, match="feed_max_age: no such api setting"):
        load_settings(feed_max_age=90)


def test_wildcard_origin_is_allowed() -> None:
    assert ApiSettings(cors_origins="*").cors_origins == ("*",)


def test_the_broker_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    cert, key = tmp_path / "svc.api-1.crt", tmp_path / "svc.api-1.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    tls_url = "mqtts://127.0.0.1:8884"
    for settings, says in (
        ({"broker_url": tls_url, "broker_cert_file": cert}, "set both broker_cert_file and"),
        (
            {"broker_url": "mqtt://127.0.0.1:1883", "broker_cert_file": cert, "broker_key_file": cert},
            "mqtts://",
        ),
        ({"broker_cert_file": cert, "broker_key_file": cert}, "need an mqtts:// broker_url"),
        (
            {"broker_url": tls_url, "broker_cert_file": cert, "broker_key_file": key},
            f"broker_key_file {key}: cannot read it (No such file or directory)",
        ),
    ):
        with pytest.raises(SettingsError, match="invalid api settings") as refused:
            load_settings(**settings)
        assert says in str(refused.value)
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    loaded = load_settings(broker_url=tls_url, broker_cert_file=cert, broker_key_file=key)
    assert (loaded.broker_cert_file, loaded.broker_key_file) == (cert, key)
