"""GET /v1/transit/vehicle-positions over HTTP: formats, caching, header clock."""

from __future__ import annotations

import json
import re
import struct

from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.transit import gtfs_realtime_pb2

from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS, FakeClock, bus_fix

FEED = "/v1/transit/vehicle-positions"


def f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def parse(content: bytes) -> gtfs_realtime_pb2.FeedMessage:
    return gtfs_realtime_pb2.FeedMessage.FromString(content)


def test_feed_has_exactly_the_fresh_buses(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get(FEED)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert response.headers["cache-control"] == "public, max-age=5"
    feed = parse(response.content)

    assert feed.header.gtfs_realtime_version == "2.0"
    assert feed.header.incrementality == gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    assert feed.header.timestamp == NOW_MS // 1000  # when it was built, not the newest fix
    assert [entity.id for entity in feed.entity] == ["0877", "0999", "1204"]
    parked, fading, moving = (entity.vehicle for entity in feed.entity)
    # 0999 is 120 s old: past the 90 s it is live, fading out where it was last heard, with that time.
    assert fading.timestamp == NOW_MS // 1000 - 120

    assert (moving.vehicle.id, moving.trip.route_id, moving.timestamp) == ("1204", "M41", NOW_MS // 1000 - 5)
    assert (moving.position.latitude, moving.position.longitude) == (f32(52.520008), f32(13.404954))
    assert (moving.position.speed, moving.position.bearing) == (f32(8.5), f32(271.5))

    assert (parked.vehicle.id, parked.vehicle.label) == ("0877", "Line 100 #877")
    assert (parked.position.latitude, parked.position.longitude) == (f32(52.516275), f32(13.377704))
    assert parked.position.speed == 0.0
    assert not parked.position.HasField("bearing")
    assert not parked.HasField("trip")


def test_json_and_suffix_aliases_carry_the_same_message(client: TestClient, city_store: SqliteStore) -> None:
    protobuf = client.get(FEED).content
    assert client.get(FEED + ".pb").content == protobuf
    expected = json_format.MessageToDict(parse(protobuf), preserving_proto_field_name=True)
    for response in (client.get(FEED, params={"format": "json"}), client.get(FEED + ".json")):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected
    entity = expected["entity"][2]
    assert entity["id"] == "1204"
    assert entity["vehicle"]["trip"] == {"route_id": "M41"}
    assert entity["vehicle"]["position"]["bearing"] == 271.5
    assert json_format.ParseDict(
        json.loads(client.get(FEED + ".json").content), gtfs_realtime_pb2.FeedMessage()
    ) == parse(protobuf)


def test_etag_answers_304_until_the_feed_changes(
    client: TestClient, city_store: SqliteStore, clock: FakeClock
) -> None:
    first = client.get(FEED)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert client.get(FEED, params={"format": "json"}).headers["etag"] != etag

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = client.get(FEED, headers={"If-None-Match": if_none_match})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
        assert unchanged.headers["cache-control"] == "public, max-age=5"
    assert client.get(FEED, headers={"If-None-Match": '"other"'}).status_code == 200

    city_store.write(
        [bus_fix("1204", 1, lat=52.521, lon=13.405, speed_mps=9.0, course_deg=270.0, route="M41")]
    )
    clock.now_ms += 1000  # feeds are rebuilt once a second (CITYGW_TRANSIT_REBUILD_INTERVAL_S)
    changed = client.get(FEED, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert parse(changed.content).header.timestamp == NOW_MS // 1000 + 1


def test_header_timestamp_never_goes_back(client: TestClient, store: SqliteStore, clock: FakeClock) -> None:
    store.write([bus_fix("1204", 5, lat=1.0, lon=1.0)])
    assert parse(client.get(FEED).content).header.timestamp == NOW_MS // 1000

    clock.now_ms += (
        300_000  # the bus went quiet (past 90 s live and 120 s fading): an empty feed, stamped now
    )
    empty = parse(client.get(FEED).content)
    assert (len(empty.entity), empty.header.timestamp) == (0, NOW_MS // 1000 + 300)

    store.write([bus_fix("1204", 3, lat=1.0, lon=1.0, now_ms=clock.now_ms)])  # a fix older than that stamp
    clock.now_ms += 1000  # the next build (feeds are rebuilt once a second)
    back = parse(client.get(FEED).content)
    assert [entity.id for entity in back.entity] == ["1204"]
    assert back.entity[0].vehicle.timestamp == NOW_MS // 1000 + 297
    assert back.header.timestamp == NOW_MS // 1000 + 301  # the build time, not the older fix

    clock.now_ms -= 5000  # the server's clock stepped back
    assert parse(client.get(FEED).content).header.timestamp == NOW_MS // 1000 + 301


def test_bad_format_is_422(client: TestClient) -> None:
    response = client.get(FEED, params={"format": "xml"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "format"]
