"""The answers every operation may give besides its own, declared in the OpenAPI document.

Clients generated from the document, and gateways that validate against it, must know them: a
missing or refused key (401, 403) where the operation takes one, a malformed time or range (400), a
body read but refused (422), no such id in the path (404), a public client over its rate (429), the
store, registry or broker down (503). Each with the body FastAPI gives an HTTPException,
``{"detail": ...}``; a 422 is FastAPI's validation error or the operation's own refusal in that
shape. Operations keep what they declare themselves (descriptions of their own 400s, 409s...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.rate_limit import rate_limited

PROBLEM = "Problem"
PROBLEM_REF = f"#/components/schemas/{PROBLEM}"
VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"
_PROBLEM_SCHEMA = {
    "title": PROBLEM,
    "type": "object",
    "properties": {"detail": {"title": "Detail", "description": "what went wrong: a text or a structure"}},
    "required": ["detail"],
}
_ANSWERS = {
    "400": "the request is well-formed but not answerable as asked (a time, range or value it names)",
    "401": "no key or token, or one that is not valid",
    "403": "a valid key or token whose role or sites do not allow this",
    "404": "nothing with the id in the path",
    "422": "the body was read but is refused: its problems are in detail",
    "429": "this client asked more often than the public rate limit allows; see Retry-After",
    "503": "the store, the registry or the broker is unavailable; try again after Retry-After",
}


def document_common_answers(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare the common answers of every operation (once, then cached)."""
    build: Callable[[], dict[str, Any]] = app.openapi
    limited = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, APIRoute) and _calls(route.dependant, rate_limited)
        for method in route.methods or ()
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_common_answers(build(), limited)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_common_answers(
    document: dict[str, Any], rate_limited_operations: Iterable[tuple[str, str]]
) -> None:
    """Add the common answers to ``document`` in place: ``rate_limited_operations`` are (path, method)."""
    limited = set(rate_limited_operations)
    document.setdefault("components", {}).setdefault("schemas", {})[PROBLEM] = _PROBLEM_SCHEMA
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            codes = ["503"]
            if operation.get("parameters") or operation.get("requestBody"):
                codes.append("400")
            if operation.get("requestBody"):
                codes.append("422")
            if "{" in path:
                codes.append("404")
            if operation.get("security"):
                codes += ["401", "403"]
            if (path, method) in limited:
                codes.append("429")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": _ANSWERS[code]})
            _refusals_too(responses.get("422"))
            for code, answer in responses.items():
                if code >= "400":  # an error declared without a body has FastAPI's error body
                    answer.setdefault("content", {"application/json": {"schema": {"$ref": PROBLEM_REF}}})


def _refusals_too(answer: dict[str, Any] | None) -> None:
    """A 422 is FastAPI's validation error or the operation's own refusal (a text or its problems)."""
    content = (answer or {}).get("content", {}).get("application/json")
    if content is not None and content.get("schema") == {"$ref": VALIDATION_ERROR}:
        content["schema"] = {"anyOf": [{"$ref": VALIDATION_ERROR}, {"$ref": PROBLEM_REF}]}


def _calls(dependant: Dependant, function: Callable[..., Any]) -> bool:
    return dependant.call is function or any(_calls(d, function) for d in dependant.dependencies)
