"""The current EEA air-quality index per station, per district and for the city: public."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.air import StationIndex, station_indices, worst
from api.deps import ContextDep, NowMsDep, SettingsDep
from api.query import invalid
from api.timespec import iso
from citygw.contract import air_quality

router = APIRouter(prefix="/v1/air-quality", tags=["air quality"])

TableQuery = Annotated[
    str | None,
    Query(
        max_length=32, description=f"index table: {', '.join(air_quality.TABLES)}; default the configured one"
    ),
]


class IndexPublic(BaseModel):
    band: int = Field(description="1 = best")
    level: str
    pollutant: str = Field(description="the pollutant that set the band")


class StationPublic(BaseModel):
    device: str
    site: str | None
    district: str | None
    observed_at: str
    stale: bool = Field(description="newest reading too old for a current index")
    concentrations_ugm3: dict[str, float] = Field(
        description="by pollutant role (pm2_5, pm10, no2, o3, so2): the EEA averages the index takes"
    )
    index: IndexPublic | None


class StationsPublic(BaseModel):
    table: str
    levels: list[str]
    generated_at: str
    stations: list[StationPublic]


class AreaPublic(BaseModel):
    name: str = Field(description="'city' or the district")
    station: str = Field(description="the worst station, whose index the area takes")
    index: IndexPublic


class CityPublic(BaseModel):
    table: str
    levels: list[str]
    generated_at: str
    city: AreaPublic | None = Field(description="null when no station has a current index")
    districts: list[AreaPublic]


def _table(name: str | None, default: str) -> air_quality.IndexTable:
    chosen = name if name is not None else default
    if chosen not in air_quality.TABLES:
        raise invalid("table", chosen, f"no index table {chosen!r}; known: {', '.join(air_quality.TABLES)}")
    return air_quality.TABLES[chosen]


def _stations(context: ContextDep, now_ms: int, table: air_quality.IndexTable) -> list[StationIndex]:
    """The stations' indices, reused for a minute (``RecentIndices``)."""
    settings = context.settings
    return context.air_indices.get(
        table.version,
        now_ms,
        lambda: station_indices(
            context.store, settings.roles, table=table, now_ms=now_ms, max_age_s=settings.aq_max_age_s
        ),
    )


def _index(station: StationIndex) -> IndexPublic | None:
    if station.index is None:
        return None
    return IndexPublic(band=station.index.band, level=station.index.level, pollutant=station.index.pollutant)


def _area(name: str, station: StationIndex | None) -> AreaPublic | None:
    index = _index(station) if station is not None else None
    return AreaPublic(name=name, station=station.device, index=index) if station and index else None


@router.get("/stations", response_model=StationsPublic)
def stations(
    context: ContextDep, settings: SettingsDep, now_ms: NowMsDep, table: TableQuery = None
) -> StationsPublic:
    """Each station's current index and the averages it is made of, in µg/m³ (ppb converted): the gases'
    mean over the past hour, PM's over the past 24 hours (the EEA's definition)."""
    chosen = _table(table, settings.aq_table)
    found = _stations(context, now_ms, chosen)
    return StationsPublic(
        table=chosen.version,
        levels=list(chosen.levels),
        generated_at=iso(now_ms),
        stations=[
            StationPublic(
                device=s.device,
                site=s.site,
                district=s.district,
                observed_at=iso(s.observed_ms),
                stale=s.stale,
                concentrations_ugm3=s.concentrations,
                index=_index(s),
            )
            for s in found
        ],
    )


@router.get("/city", response_model=CityPublic)
def city(
    context: ContextDep, settings: SettingsDep, now_ms: NowMsDep, table: TableQuery = None
) -> CityPublic:
    """The city's and each district's index: that of their worst station with a current index."""
    chosen = _table(table, settings.aq_table)
    found = _stations(context, now_ms, chosen)
    districts = sorted({s.district for s in found if s.district})
    areas = [_area(d, worst(s for s in found if s.district == d)) for d in districts]
    return CityPublic(
        table=chosen.version,
        levels=list(chosen.levels),
        generated_at=iso(now_ms),
        city=_area("city", worst(found)),
        districts=[area for area in areas if area is not None],
    )
