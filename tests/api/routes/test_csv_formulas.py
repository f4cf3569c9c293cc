"""CSV exports never hand a spreadsheet a formula; JSON exports keep every value exactly.

Payloads: tests/api/data/csv_injection (PROVENANCE.md). Peer check: the ``defusedcsv`` package's
writer (a drop-in ``csv`` that escapes formulas) escapes no payload that ours leaves as it is.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import defusedcsv.csv  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.open_data import flat_row
from api.spreadsheet import FORMULA_STARTS, csv_cell
from collector.store.base import FieldValue, Point
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, reading

PAYLOADS = (Path(__file__).parents[1] / "data" / "csv_injection" / "payloads.txt").read_text().splitlines()
HYPERLINK = '=HYPERLINK("http://evil.example","x")'
START_MS = NOW_MS - 10 * MINUTE_MS


def notes() -> list[Point]:
    """One meter reading per payload: the payload as a string field, negative numbers beside it."""
    texts = [
        HYPERLINK,
        *PAYLOADS,
        "+380 32 000",
        "-1+1",
        "@admin",
        "\tx",
        "\rx",
        "a\rb",
        "c\nd",
        "plain",
        "-",
    ]
    return [
        reading(
            "electricity",
            "meter-1",
            START_MS + i * 1000,
            {"note": text, "total_power": -1500.5, "import_energy_kwh": -3, "ok": False},
            site="=1+1",
            district="depot",
        )
        for i, text in enumerate(texts)
    ]


def export(client: TestClient, fmt: str) -> str:
    params = {"format": fmt, "start": str(START_MS), "end": str(NOW_MS)}
    response = client.get("/v1/exports/electricity", params=params)
    assert response.status_code == 200, response.text
    return response.text


def test_string_cells_starting_a_formula_are_quoted_numbers_are_not(
    client: TestClient, store: SqliteStore
) -> None:
    points = notes()
    store.write(points)
    text = export(client, "csv")
    assert text.startswith("ts,ts_ms,device,agent,site,district,")
    assert text.endswith("\r\n")  # RFC 4180
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [row["note"] for row in table] == [
        "'" + str(p.fields["note"]) if str(p.fields["note"]).startswith(FORMULA_STARTS) else p.fields["note"]
        for p in points
    ]
    assert table[0]["note"] == "'" + HYPERLINK
    assert {row["site"] for row in table} == {"'=1+1"}
    assert {row["district"] for row in table} == {"depot"}
    assert {(row["total_power"], row["import_energy_kwh"], row["ok"]) for row in table} == {
        ("-1500.5", "-3", "false")
    }


def test_json_exports_keep_every_value_exactly(client: TestClient, store: SqliteStore) -> None:
    points = notes()
    store.write(points)
    rows: list[dict[str, Any]] = json.loads(export(client, "json"))["rows"]
    assert [row["values"]["note"] for row in rows] == [p.fields["note"] for p in points]
    assert {row["site"] for row in rows} == {"=1+1"}
    assert {row["values"]["total_power"] for row in rows} == {-1500.5}


def peer_escapes(value: str) -> bool:
    """Whether defusedcsv's writer puts a ``'`` before ``value``."""
    out = io.StringIO()
    defusedcsv.csv.writer(out, lineterminator="\n").writerow([value])
    return out.getvalue().removeprefix('"').startswith("'") and not value.startswith("'")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_peer_escapes_no_payload_we_leave_as_it_is(payload: str) -> None:
    if csv_cell(payload) == payload:
        assert not peer_escapes(payload)
    else:
        assert csv_cell(payload) == "'" + payload


@given(st.text(max_size=12))
def test_a_neutralised_cell_starts_no_formula_and_keeps_the_text(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell in (text, "'" + text)
    if peer_escapes(text) and text[:1] not in "|%":  # the peer also escapes | and % (DDE, Lotus)
        assert cell.startswith("'"), text


@pytest.mark.parametrize("number", [-1, -0.5, -1e300, 0, 7])
def test_numbers_are_numbers(number: FieldValue) -> None:
    assert csv_cell(number) == str(number)
    assert float(csv_cell(number)) == number


def test_open_data_rows_quote_string_values() -> None:
    entity = {
        "id": "urn:ngsi-ld:Streetlight:lviv:lamp-1",
        "type": "Streetlight",
        "status": {"type": "Property", "value": HYPERLINK, "observedAt": "2027-01-15T08:00:00.000Z"},
        "level": {"type": "Property", "value": -0.5, "observedAt": "2027-01-15T08:00:00.000Z"},
    }
    row = flat_row(entity)
    assert row["status"] == "'" + HYPERLINK
    assert row["level"] == "-0.5"
