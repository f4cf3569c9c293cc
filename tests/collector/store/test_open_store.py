"""open_store(url): every accepted form, and errors that name the bad part without leaking secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.store import TOKEN_ENV, Point, open_store, redact
from collector.store.base import Retention
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influx_v2 import InfluxV2Store
from collector.store.sqlite import SqliteStore


def test_sqlite_absolute_path(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/telemetry.sqlite")  # four slashes: tmp_path starts with /
    assert isinstance(store, SqliteStore)
    store.write([Point("water", {"device": "m1"}, 1, {"flow": 1.0})])
    store.close()
    assert (tmp_path / "telemetry.sqlite").exists()


def test_sqlite_relative_path_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///var/telemetry.sqlite")  # three slashes: relative, folder made
    assert isinstance(store, SqliteStore)
    assert store.path == "var/telemetry.sqlite"
    store.close()
    assert (tmp_path / "var" / "telemetry.sqlite").exists()
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteStore)
    assert memory.path == ":memory:"
    memory.close()


def test_influxdb_v1_with_credentials_and_tls() -> None:
    store = open_store("influxdb://writer:p%40ss@influx.city.example:8087/city_telemetry")
    assert isinstance(store, InfluxV1Store)
    assert store.database == "city_telemetry"
    assert str(store.reader._http.base_url) == "http://influx.city.example:8087"
    store.close()
    secure = open_store("influxdb+https://influx.city.example/city")
    assert isinstance(secure, InfluxV1Store)
    assert str(secure.reader._http.base_url) == "https://influx.city.example:8086"
    assert secure.gzip
    secure.close()
    local = open_store("influxdb://127.0.0.1:8086/city?gzip=false")
    assert isinstance(local, InfluxV1Store)
    assert (local.database, local.gzip) == ("city", False)
    local.close()


def test_influxdb_v2_token_from_url_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("influxdb2+https://:tok3n@cloud.example:443/?org=city&bucket=telemetry")
    assert isinstance(store, InfluxV2Store)
    assert (store.url, store.org, store.bucket) == ("https://cloud.example:443", "city", "telemetry")
    store.close()
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    from_env = open_store("influxdb2://localhost:8086/?org=city&bucket=telemetry")
    assert isinstance(from_env, InfluxV2Store)
    assert from_env.retention() is None
    from_env.close()


def test_influxdb_v2_token_given_by_the_settings_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The services pass their influx_token setting (file, environment or flag); tools read the variable."""
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    store = open_store("influxdb2://localhost:8086/?org=city&bucket=b", token="from-settings")
    assert isinstance(store, InfluxV2Store)
    assert store._http.headers["Authorization"] == "Token from-settings"
    store.close()
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ValueError, match="no token; put it in the URL password or influx_token"):
        open_store("influxdb2://localhost:8086/?org=city&bucket=b")


def test_influxdb_v2_retention_is_a_setting_of_the_url() -> None:
    """Issue 22.8: what the bucket keeps, so the collector refuses older readings before writing."""
    store = open_store("influxdb2://:t@localhost:8086/?org=city&bucket=b&retention=720h")
    assert isinstance(store, InfluxV2Store)
    assert store.retention() == Retention("bucket retention 720h (store URL)", 720 * 3_600_000)
    store.close()
    forever = open_store("influxdb2://:t@localhost:8086/?org=city&bucket=b&retention=0s")
    assert isinstance(forever, InfluxV2Store)
    assert forever.retention() is None
    forever.close()


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("postgres://db/x", "unknown scheme"),
        ("sqlite+https:///x.sqlite", "unknown scheme"),
        ("sqlite://", "unknown scheme"),
        ("sqlite:///", "bad file path"),
        ("sqlite://relative.sqlite", "bad file path"),
        ("influxdb://u:hunter2@host:8086/", "one database name"),
        ("influxdb://u:hunter2@host:8086/a/b", "one database name"),
        ("influxdb://u:hunter2@host:notaport/db", "bad host or port"),
        ("influxdb://u:hunter2@:8086/db", "missing host"),
        ("influxdb://u:hunter2@host:8086/db?gzip=no", "only gzip=true or gzip=false"),
        ("influxdb://u:hunter2@host:8086/db?gzip=false&x=1", "unexpected query"),
        ("influxdb://u:hunter2@host:8086/db?gzip=true&gzip=false", "unexpected query"),
        ("influxdb2://:hunter2@host:8086/?bucket=b", "missing org="),
        ("influxdb2://:hunter2@host:8086/?org=o", "missing bucket="),
        ("influxdb2://:hunter2@host:8086/?org=o&bucket=b&x=1", "unknown parameter"),
        ("influxdb2://:hunter2@host:8086/api?org=o&bucket=b", "unexpected path"),
        ("influxdb2://host:8086/?org=o&bucket=b", "no token"),
        ("influxdb2://:hunter2@host:8086/?org=o&bucket=b&retention=30d", "retention= is a duration"),
    ],
)
def test_bad_urls_name_the_part_and_the_form_but_never_the_password(
    url: str, names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=names) as caught:
        open_store(url)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "://" in message.partition("expected")[2]


def test_redact_hides_only_the_password() -> None:
    assert redact("influxdb://user:secret@host:8086/db") == "influxdb://user:***@host:8086/db"
    assert redact("influxdb://host:8086/db") == "influxdb://host:8086/db"
