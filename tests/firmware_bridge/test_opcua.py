"""The OPC UA driver against a real asyncua server (the station simulator) on a loopback port."""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from asyncua.ua.status_codes import StatusCodes

from firmware_bridge.opcua import (
    DeviceNodes,
    Endpoint,
    NodeNotFound,
    OpcUaConnection,
    OpcUaUnavailable,
    Sample,
    changes,
    decode,
    reading_time,
)
from firmware_bridge.profile import OpcUaProfile, ProfileError, load_any_profile, load_opcua_profile
from firmware_bridge.simulators.opcua import OpcUaStationSimulator
from tests.services import free_port

PROFILE = "water_pump_station"
PROFILE_DATA = yaml.safe_load(Path(f"firmware_bridge/profiles/{PROFILE}.yaml").read_text(encoding="utf-8"))


@pytest.fixture
async def station() -> AsyncIterator[OpcUaStationSimulator]:
    sim = OpcUaStationSimulator(PROFILE, ["PS1", "PS2"], port=free_port())
    await sim.start()
    yield sim
    await sim.stop()


async def test_reads_every_node_of_a_station_by_browse_path(station: OpcUaStationSimulator) -> None:
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        nodes = await connection.resolve("ps-1", station.profile, station.station_node("PS1"))
        await station.set("PS1", "flow_rate", 201.5)
        decoded = decode(nodes, await connection.read(nodes), received_ms=0)
    assert decoded.bad == {}
    fields = {name: value for group in decoded.readings.values() for name, value in group.items()}
    assert fields == {
        "flow_rate": 201.5,
        "outlet_pressure": 4.6,
        "inlet_pressure": 1.2,
        "reservoir_level": 3.85,
        "pump1_running": True,
        "pump1_speed": 78.0,
        "pump1_current": 41.0,
        "pump2_running": False,
        "energy": 152340.0,
    }
    # The flow's reading carries the time the station set it (its source timestamp).
    assert decoded.readings[station.history[-1].ts_ms] == {"flow_rate": 201.5}


async def test_the_second_station_is_its_own_object(station: OpcUaStationSimulator) -> None:
    await station.set("PS2", "reservoir_level", 1.25)
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        one = await connection.resolve("ps-1", station.profile, station.station_node("PS1"))
        two = await connection.resolve("ps-2", station.profile, station.station_node("PS2"))
        levels = [
            next(s.value for spec, s in await connection.read(n) if spec.field == "reservoir_level")
            for n in (one, two)
        ]
    assert levels == [3.85, 1.25]


async def test_subscription_reports_each_change_with_its_time(station: OpcUaStationSimulator) -> None:
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        nodes = await connection.resolve("ps-1", station.profile, station.station_node("PS1"))
        async with connection.subscription(nodes, 50) as subscription:
            batches = changes(subscription, nodes)
            first = await asyncio.wait_for(anext(batches), 5)
            assert {spec.field for spec, _ in first} == set(station.profile.field_names)  # initial values
            sent = [await station.set("PS1", "pump1_current", 41.0 + n) for n in (1, 2, 3)]
            got: list[tuple[int, float]] = []
            while len(got) < 3:
                for _, sample in await asyncio.wait_for(anext(batches), 5):
                    got.append((reading_time(nodes.profile, sample, 0), sample.value))
    assert got == [(s.ts_ms, s.value) for s in sent]


async def test_deadband_from_the_profile_is_applied_by_the_server(station: OpcUaStationSimulator) -> None:
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        nodes = await connection.resolve("ps-1", station.profile, station.station_node("PS1"))
        async with connection.subscription(nodes, 50) as subscription:
            batches = changes(subscription, nodes)
            await asyncio.wait_for(anext(batches), 5)
            await station.set("PS1", "flow_rate", 182.2)  # within the 0.5 m³/h deadband
            await station.set("PS1", "flow_rate", 185.0)  # beyond it
            batch = await asyncio.wait_for(anext(batches), 5)
    assert [(spec.field, s.value) for spec, s in batch] == [("flow_rate", 185.0)]


async def test_bad_is_no_field_but_a_fault_naming_the_status(station: OpcUaStationSimulator) -> None:
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        nodes = await connection.resolve("ps-1", station.profile, station.station_node("PS1"))
        await station.set_status("PS1", "reservoir_level", StatusCodes.BadSensorFailure)
        await station.set_status("PS1", "inlet_pressure", StatusCodes.UncertainLastUsableValue)
        decoded = decode(nodes, await connection.read(nodes), received_ms=0)
    fields = {name: value for group in decoded.readings.values() for name, value in group.items()}
    assert "reservoir_level" not in fields
    assert decoded.bad == {
        "reservoir_level": "node path Reservoir/Level of profile water_pump_station: "
        "BadSensorFailure (0x808C0000)"
    }
    assert fields["inlet_pressure"] == 1.2
    assert fields["inlet_pressure_uncertain"] is True


async def test_a_wrong_browse_path_names_the_node_and_the_profile(
    station: OpcUaStationSimulator, tmp_path: Path
) -> None:
    data = copy.deepcopy(PROFILE_DATA)
    data["nodes"][3]["path"] = "Reservoir/Levl"
    broken = OpcUaProfile.model_validate(data)
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        with pytest.raises(NodeNotFound) as caught:
            await connection.resolve("ps-1", broken, station.station_node("PS1"))
    message = str(caught.value)
    assert "node path Reservoir/Levl of profile water_pump_station (reservoir_level)" in message
    assert "BadNoMatch" in message
    assert "fix the profile's path" in message


async def test_a_wrong_node_id_and_a_wrong_station_are_named(station: OpcUaStationSimulator) -> None:
    profile = OpcUaProfile.model_validate(
        {
            "model": "one_tag",
            "vendor": "test",
            "source": "test",
            "verified": "modelled",
            "measurement": "water_pumping",
            "protocol": "opcua",
            "nodes": [{"field": "flow", "node": f"nsu={station.namespace};s=PS1.Outlet/Flw"}],
        }
    )
    async with OpcUaConnection(Endpoint(station.url)) as connection:
        with pytest.raises(NodeNotFound, match=r"node nsu=.*;s=PS1\.Outlet/Flw of profile one_tag \(flow\)"):
            await connection.resolve("ps-1", profile, None)
        with pytest.raises(NodeNotFound, match=r"device ps-9: its node .*;s=PS9 does not exist"):
            await connection.resolve("ps-9", station.profile, station.station_node("PS9"))
        with pytest.raises(NodeNotFound, match=r"device ps-1: its node .* has no namespace urn:nowhere"):
            await connection.resolve("ps-1", station.profile, "nsu=urn:nowhere;s=PS1")


async def test_a_dead_server_is_one_clear_error() -> None:
    port = free_port()
    with pytest.raises(OpcUaUnavailable) as caught:
        async with OpcUaConnection(Endpoint(f"opc.tcp://127.0.0.1:{port}/citygw", timeout=1)):
            pass
    assert str(caught.value) == (
        f"connect to opc.tcp://127.0.0.1:{port}/citygw: not connected, connection refused: "
        f"nothing listens on 127.0.0.1:{port} (wrong port, or the server is off)"
    )


async def test_a_server_that_stops_ends_the_session(station: OpcUaStationSimulator) -> None:
    async with OpcUaConnection(Endpoint(station.url), watchdog_s=0.2) as connection:
        await station.stop()
        await asyncio.wait_for(connection.lost.wait(), 10)
    assert connection.why_lost.startswith(f"session with {station.url} lost")


async def test_user_and_password_are_required_when_the_server_asks() -> None:
    sim = OpcUaStationSimulator(PROFILE, ["PS1"], port=free_port(), username="scada", password="s3cret")
    await sim.start()
    try:
        async with OpcUaConnection(Endpoint(sim.url, username="scada", password="s3cret")) as connection:
            nodes = await connection.resolve("ps-1", sim.profile, sim.station_node("PS1"))
            assert len(await connection.read(nodes)) == len(sim.profile.nodes)
        with pytest.raises(OpcUaUnavailable, match="the server refused: BadUserAccessDenied"):
            async with OpcUaConnection(Endpoint(sim.url, username="scada", password="wrong")):
                pass
    finally:
        await sim.stop()


def test_timestamps_fall_back_from_source_to_server_to_agent() -> None:
    from datetime import UTC, datetime

    profile = load_opcua_profile(PROFILE)
    source, server = datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert reading_time(profile, Sample(1.0, 0, source, server), 7) == int(source.timestamp() * 1000)
    assert reading_time(profile, Sample(1.0, 0, None, server), 7) == int(server.timestamp() * 1000)
    assert reading_time(profile, Sample(1.0, 0, None, None), 7) == 7
    by_agent = profile.model_copy(update={"timestamp": "agent"})
    assert reading_time(by_agent, Sample(1.0, 0, source, server), 7) == 7


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"path": None}, "name the node either as node"),
        ({"node": "ns=2;s=X"}, "name the node either as node"),
        ({"path": "Outlet//Flow"}, "has an empty step"),
        ({"path": "zz:Outlet/Flow"}, "names no namespace alias"),
        ({"path": None, "node": "Outlet.Flow"}, "String should match pattern"),
        ({"scale": 0}, "scale 0"),
        ({"role": "water_ph"}, "choose another role"),  # a flow in m³/h is no pH
        ({"role": "flow"}, "Input should be"),
    ],
)
def test_profile_mistakes_are_named(tmp_path: Path, change: dict[str, object], says: str) -> None:
    data = copy.deepcopy(PROFILE_DATA)
    node = {**data["nodes"][0], **change}
    data["nodes"][0] = {k: v for k, v in node.items() if v is not None}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as caught:
        load_any_profile(path)
    assert "flow_rate" in str(caught.value)  # where: nodes[0] (flow_rate), or the field's own name
    assert says in str(caught.value)


async def make_certificate(folder: Path, name: str, uri: str, use: object) -> tuple[Path, Path]:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    key, cert = folder / f"{name}.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(key, cert, uri, "127.0.0.1", [use], {"commonName": name})  # type: ignore[list-item]
    return cert, key


@pytest.mark.parametrize("security", ["sign", "sign_and_encrypt"])
async def test_basic256sha256_with_certificates(tmp_path: Path, security: str) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    server_cert, server_key = await make_certificate(
        tmp_path, "server", "urn:citygw:simulator", ExtendedKeyUsageOID.SERVER_AUTH
    )
    agent_cert, agent_key = await make_certificate(
        tmp_path, "agent", "urn:citygw:edge-agent", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    sim = OpcUaStationSimulator(
        PROFILE, ["PS1"], port=free_port(), certificate=server_cert, private_key=server_key, secure_only=True
    )
    await sim.start()
    try:
        secure = Endpoint(
            sim.url,
            security=security,  # type: ignore[arg-type]
            certificate=agent_cert,
            private_key=agent_key,
            server_certificate=server_cert,
        )
        async with OpcUaConnection(secure) as connection:
            nodes = await connection.resolve("ps-1", sim.profile, sim.station_node("PS1"))
            assert len(await connection.read(nodes)) == len(sim.profile.nodes)
        with pytest.raises(OpcUaUnavailable, match="the server offers no endpoint of security none"):
            async with OpcUaConnection(Endpoint(sim.url)):
                pass
    finally:
        await sim.stop()


def test_values_that_are_no_measurement_are_left_out_with_why() -> None:
    from datetime import UTC, datetime

    from asyncua import ua

    profile = load_opcua_profile(PROFILE)
    nodes = DeviceNodes(
        "ps-1", profile, tuple((spec, ua.NodeId(n, 2)) for n, spec in enumerate(profile.nodes))
    )
    spec = {s.field: s for s in profile.nodes}
    never_set = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's null DateTime: a clock never set
    samples = [
        (spec["flow_rate"], Sample(math.nan, 0, None, None)),
        (spec["outlet_pressure"], Sample([4.1, 4.2], 0, None, None)),
        (spec["pump1_running"], Sample(1.0, 0, None, None)),
        (spec["reservoir_level"], Sample(3.5, 0, never_set, never_set)),
        (spec["pump1_current"], Sample(40, StatusCodes.UncertainSubNormal, None, None)),
    ]
    decoded = decode(nodes, samples, received_ms=1234)
    assert decoded.readings == {
        1234: {
            "pump1_running": 1.0,
            "reservoir_level": 3.5,
            "pump1_current": 40.0,
            "pump1_current_uncertain": True,
        }
    }
    assert decoded.bad == {
        "flow_rate": "node path Outlet/Flow of profile water_pump_station: is nan: no measurement",
        "outlet_pressure": "node path Outlet/Pressure of profile water_pump_station: holds list [4.1, 4.2], "
        "not a number, boolean or text",
    }
