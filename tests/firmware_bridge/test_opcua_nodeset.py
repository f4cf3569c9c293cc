"""Golden: the OPC 40223 pump profile against the OPC Foundation's published example address space.

An asyncua server loads the DI and Machinery nodesets and the Pumps example instance as published
(captures/opcua/PROVENANCE.md). The Pumps type nodeset itself is not among them: the types the example
instantiates are stood in for by plain types with the same NodeIds, and the three values of structures
those types define (option sets, a physical address) are left out, as asyncua cannot decode them
without their definitions. Every browse path, namespace URI and engineering unit checked here is the
example's own.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.server.server import Server

from firmware_bridge.opcua import Endpoint, NodeNotFound, OpcUaConnection, decode
from firmware_bridge.profile import load_opcua_profile
from tests.services import free_port

CAPTURES = Path(__file__).parent / "captures" / "opcua"
EXAMPLE = CAPTURES / "Pumps.instanceexample.xml"
PUMPS = "http://opcfoundation.org/UA/Pumps/"
INSTANCE = "http://yourorganisation.org/InstanceExample/"
PUMP_NODE = f"nsu={INSTANCE};i=5002"  # the example's ExamplePump
NODESET = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"
STRUCTURES = {"OfferedControlModesOptionSet", "OfferedFieldbusesOptionSet", "PhysicalAddressDataType"}
# A unit of the address space (EUInformation DisplayName) -> CityGW's unit: scale and offset.
CONVERSIONS = {
    ("Pa", "bar"): (1e-5, 0.0),
    ("K", "°C"): (1.0, -273.15),
    ("W", "kW"): (1e-3, 0.0),
    ("s⁻¹", "rpm"): (60.0, 0.0),
}


async def _stand_in_for_pumps_types(server: Server, example: str) -> None:
    """Plain types with the NodeIds the example's objects and variables are typed by (its ns=2, Pumps)."""
    index = await server.register_namespace(PUMPS)
    for number in sorted(set(re.findall(r'HasTypeDefinition">ns=2;i=(\d+)<', example)), key=int):
        await server.nodes.base_object_type.add_object_type(
            ua.NodeId(int(number), index), ua.QualifiedName(f"PumpsType{number}", index)
        )
    aliases = dict(re.findall(r'<Alias Alias="(\w+)">ns=2;i=(\d+)</Alias>', example))
    for name, number in aliases.items():
        parent = server.nodes.base_structure_type if name in STRUCTURES else server.nodes.enum_data_type
        await parent.add_data_type(ua.NodeId(int(number), index), ua.QualifiedName(name, index))


def _without_structure_values(example: str) -> str:
    root = ET.fromstring(example)
    for variable in root.iter(f"{NODESET}UAVariable"):
        if variable.get("DataType") in STRUCTURES:
            for value in variable.findall(f"{NODESET}Value"):
                variable.remove(value)
    return ET.tostring(root, encoding="unicode")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pump_server() -> AsyncIterator[str]:
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/pumps"
    server.set_endpoint(url)
    await server.import_xml(str(CAPTURES / "Opc.Ua.Di.NodeSet2.xml"))
    await server.import_xml(str(CAPTURES / "Opc.Ua.Machinery.NodeSet2.xml"))
    example = EXAMPLE.read_text(encoding="utf-8")
    await _stand_in_for_pumps_types(server, example)
    await server.import_xml(xmlstring=_without_structure_values(example))
    await server.start()
    yield url
    await server.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_every_path_of_the_pump_profile_resolves_in_the_published_example(pump_server: str) -> None:
    profile = load_opcua_profile("opc_40223_pump")
    async with OpcUaConnection(Endpoint(pump_server)) as connection:
        nodes = await connection.resolve("pump-1", profile, PUMP_NODE)
        samples = await connection.read(nodes)
    # The example's own NodeIds (ns=1 in the file is the example's namespace).
    assert [node_id.Identifier for _, node_id in nodes.nodes] == [6117, 6118, 6120, 6121, 6119]
    decoded = decode(nodes, samples, received_ms=0)
    assert decoded.bad == {}
    fields = {name: value for group in decoded.readings.values() for name, value in group.items()}
    # The example's values are zeros: 0 K is -273.15 °C, the conversion applied as the profile says.
    assert fields == {
        "differential_pressure": 0.0,
        "fluid_temperature": -273.15,
        "pump_power_input": 0.0,
        "speed": 0.0,
        "number_of_starts": 0,
    }


@pytest.mark.asyncio(loop_scope="module")
async def test_the_profiles_conversions_match_the_example_units(pump_server: str) -> None:
    profile = load_opcua_profile("opc_40223_pump")
    async with OpcUaConnection(Endpoint(pump_server)) as connection:
        nodes = await connection.resolve("pump-1", profile, PUMP_NODE)
        units: dict[str, str | None] = {}
        for spec, node_id in nodes.nodes:
            node = connection.client.get_node(node_id)
            try:
                eu = await (await node.get_child("0:EngineeringUnits")).read_value()
            except ua.UaStatusCodeError:
                eu = None
            units[spec.field] = eu.DisplayName.Text if eu is not None else None
    assert units == {
        "differential_pressure": "Pa",
        "fluid_temperature": "K",
        "pump_power_input": "W",
        "speed": "s⁻¹",
        "number_of_starts": None,  # a count: no unit in the example, none in the profile
    }
    for spec in profile.nodes:
        unit = units[spec.field]
        if unit is None:
            assert spec.unit is None
            continue
        assert (spec.scale, spec.offset) == CONVERSIONS[unit, spec.unit], spec.field


@pytest.mark.asyncio(loop_scope="module")
async def test_a_path_the_example_does_not_have_is_named(pump_server: str) -> None:
    profile = load_opcua_profile("opc_40223_pump")
    wrong = profile.model_copy(
        update={
            "nodes": [
                profile.nodes[0].model_copy(update={"path": "Operational/Measurements/DifferentialPressure"})
            ]
        }
    )
    async with OpcUaConnection(Endpoint(pump_server)) as connection:
        with pytest.raises(NodeNotFound, match=r"node path Operational/Measurements/DifferentialPressure"):
            await connection.resolve("pump-1", wrong, PUMP_NODE)
