"""English names of the generated network: the national transliteration, on the standard's examples."""

from __future__ import annotations

import csv
import io

import pytest

from simulators.transit.network import latin, network_files

# The examples given in the transliteration table of the Cabinet of Ministers of Ukraine's resolution
# No. 55 of 27 January 2010 ("Про впорядкування транслітерації українського алфавіту латиницею").
STANDARD_EXAMPLES = [
    ("Алушта", "Alushta"),
    ("Згорани", "Zghorany"),
    ("Розгон", "Rozghon"),
    ("Єнакієве", "Yenakiieve"),
    ("Гаєвич", "Haievych"),
    ("Їжакевич", "Yizhakevych"),
    ("Кадиївка", "Kadyivka"),
    ("Йосипівка", "Yosypivka"),
    ("Стрий", "Stryi"),
    ("Олексіївка", "Oleksiivka"),
    ("Юрій", "Yurii"),
    ("Корюківка", "Koriukivka"),
    ("Яготин", "Yahotyn"),
    ("Костянтин", "Kostiantyn"),
    ("Знам'янка", "Znamianka"),
    ("Феодосія", "Feodosiia"),
    ("Щербухи", "Shcherbukhy"),
    ("Гоща", "Hoshcha"),
    ("Ґалаґан", "Galagan"),
    ("Жашків", "Zhashkiv"),
    ("Харків", "Kharkiv"),
    ("Біла Церква", "Bila Tserkva"),
]


@pytest.mark.parametrize(("ukrainian", "expected"), STANDARD_EXAMPLES)
def test_names_are_transliterated_as_the_standard_says(ukrainian: str, expected: str) -> None:
    assert latin(ukrainian) == expected


def test_every_stop_route_and_headsign_has_an_english_name() -> None:
    files = network_files()
    rows = list(csv.DictReader(io.StringIO(files["translations.txt"].decode())))
    named = {(row["table_name"], row["field_name"], row["field_value"]) for row in rows}
    assert {row["language"] for row in rows} == {"en"}
    for stop in csv.DictReader(io.StringIO(files["stops.txt"].decode())):
        assert ("stops", "stop_name", stop["stop_name"]) in named
    for route in csv.DictReader(io.StringIO(files["routes.txt"].decode())):
        assert ("routes", "route_long_name", route["route_long_name"]) in named
    for trip in csv.DictReader(io.StringIO(files["trips.txt"].decode())):
        assert ("trips", "trip_headsign", trip["trip_headsign"]) in named
    assert not [row for row in rows if any("\u0400" <= char <= "\u04ff" for char in row["translation"])]
