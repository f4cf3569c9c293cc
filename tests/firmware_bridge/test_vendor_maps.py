"""Every shipped profile field agrees with the register table transcribed from its vendor's document.

The tables live in ``vendor_maps/`` (see its PROVENANCE.md). A profile checked against a
datasheet must have one; a profile with a table but no datasheet check is a modelled one
compared against the best third-party transcription found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.profile import Profile, available_profiles, load_any_profile, load_profile

MAPS = Path(__file__).parent / "vendor_maps"
MAPPED = sorted(p.stem for p in MAPS.glob("*.json"))


def vendor_map(model: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MAPS / f"{model}.json").read_text(encoding="utf-8"))
    return data


def disagreements(profile: Profile, table: dict[str, Any]) -> list[str]:
    """What in the profile differs from the vendor's table, one line per field and attribute."""
    rows = {row["field"]: row for row in table["registers"] if row["field"] is not None}
    found = []
    limit = table.get("max_registers")
    if limit is not None and profile.max_registers > limit:
        found.append(
            f"max_registers is {profile.max_registers} in the profile, {limit} in the vendor's document"
        )
    for spec in profile.registers:
        row = rows.get(spec.field)
        if row is None:
            found.append(f"{spec.field}: no such register in the vendor's table")
            continue
        access = row["access"]
        checks = {
            "table": (spec.table, row["table"]),
            "address": (spec.address, row["address"]),
            "type": (spec.type, row["type"]),
            "unit": (spec.unit, row["unit"]),
            "scale": (spec.scale, row["scale"]),
            "readable": (spec.readable, "R" in access),
            "writable": (spec.writable, "W" in access),
        }
        if row["order"] is not None and spec.register_count > 1:
            checks["order"] = (spec.order, row["order"])
        found += [
            f"{spec.field}: {what} is {ours!r} in the profile, {theirs!r} in the vendor's table "
            f"({row['name']})"
            for what, (ours, theirs) in checks.items()
            if ours != theirs
        ]
    return found


@pytest.mark.parametrize("model", MAPPED)
def test_every_profile_field_agrees_with_the_vendor_table(model: str) -> None:
    table = vendor_map(model)
    assert table["model"] == model
    assert disagreements(load_profile(model), table) == []


@pytest.mark.parametrize("name", available_profiles(None))
def test_a_profile_checked_against_a_datasheet_has_its_table_here(name: str) -> None:
    profile = load_any_profile(name)
    if profile.verified == "datasheet":
        assert name in MAPPED, f"{name} says verified: datasheet but vendor_maps/{name}.json is missing"
        assert vendor_map(name)["transcribed_from"] == "vendor document"
    elif name in MAPPED:
        assert vendor_map(name)["transcribed_from"] != "vendor document", f"{name}: say verified: datasheet"


def test_the_comparison_catches_the_old_dali_map() -> None:
    """The map shipped before: group status at the fault register, a group level at the status
    register, brightness polled from write-only registers."""
    old = Profile.model_validate(
        {
            "model": "ecodim_dali_gw2",
            "vendor": "ECOdim",
            "source": "the map shipped before the vendor check",
            "verified": "modelled",
            "measurement": "lighting",
            "registers": [
                {
                    "field": "group0_brightness",
                    "table": "holding",
                    "address": 2000,
                    "type": "u16",
                    "poll": "slow",
                    "writable": True,
                    "min": 0,
                    "max": 254,
                },
                {"field": "group0_status", "table": "holding", "address": 2003, "type": "u16"},
                {"field": "group0_level", "table": "holding", "address": 2004, "type": "u16"},
                {"field": "lamp0_status", "table": "holding", "address": 3003, "type": "u16"},
            ],
        }
    )
    assert disagreements(old, vendor_map("ecodim_dali_gw2")) == [
        "group0_brightness: readable is True in the profile, False in the vendor's table "
        "(Group 0 brightness (DALI arc level 0..254))",
        "group0_status: address is 2003 in the profile, 2004 in the vendor's table (Group 0 status)",
        "group0_level: no such register in the vendor's table",
    ]
