"""Open data for anyone: FIWARE Smart Data Models entities (NGSI-LD JSON) or CSV, per dataset."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from api.deps import ContextDep, NowMsDep, SettingsDep, StoreDep
from api.open_data import DATASETS, DatasetName, entities, flat_row
from api.registry.catalogue import registered_devices
from api.routes.paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, page_of

router = APIRouter(prefix="/v1/open-data", tags=["open data"])
NGSI_LD_JSON = "application/ld+json"


class OpenDataFormat(StrEnum):
    NGSI_LD = "ngsi-ld"
    CSV = "csv"


class DatasetPublic(BaseModel):
    name: DatasetName
    type: str
    formats: list[OpenDataFormat]
    context: list[str]


@router.get("", response_model=list[DatasetPublic])
def datasets() -> list[DatasetPublic]:
    """The datasets published, their Smart Data Model type and formats."""
    return [
        DatasetPublic(name=d.name, type=d.entity_type, formats=list(OpenDataFormat), context=d.context)
        for d in DATASETS.values()
    ]


@router.get(
    "/{dataset}",
    response_class=Response,
    responses={200: {"content": {NGSI_LD_JSON: {}, "text/csv": {}}, "description": "the entities"}},
)
def dataset(
    request: Request,
    context: ContextDep,
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    dataset: DatasetName,
    format: Annotated[OpenDataFormat, Query(description="ngsi-ld (JSON-LD) or csv")] = OpenDataFormat.NGSI_LD,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Response:
    """Every public device's newest state as entities of the dataset's Smart Data Model, by id, paged."""
    chosen = DATASETS[dataset]
    with context.registry.session() as session:
        devices = registered_devices(session)
    paging = Response()
    found: list[dict[str, Any]] = page_of(
        entities(chosen, store, devices, settings, now_ms, context.air_indices),
        lambda entity: (str(entity["id"]),),
        limit=limit,
        cursor=cursor,
        like=("id",),
        request=request,
        response=paging,
    )
    headers = {"Cache-Control": f"public, max-age={settings.feed_cache_max_age_s}"}
    if "link" in paging.headers:
        headers["Link"] = paging.headers["link"]
    if format is OpenDataFormat.CSV:
        rows = [flat_row(entity) for entity in found]
        columns = list(dict.fromkeys(name for row in rows for name in row)) or ["id", "type"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)  # RFC 4180: CRLF, CR and LF in a cell quoted
        writer.writeheader()
        writer.writerows(rows)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    body = [{"@context": chosen.context, **entity} for entity in found]
    return Response(json.dumps(body, ensure_ascii=False), media_type=NGSI_LD_JSON, headers=headers)
