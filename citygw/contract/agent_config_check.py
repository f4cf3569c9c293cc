"""Validate an agent's config: its schema, then each cross-check, then the bus time of its RS-485 lines.

The agent runs it on its file and on every pushed config, and the API before it pushes one, so the
API refuses exactly what the agent would. Every problem comes back as a ``Problem`` (field, what is
wrong, the fix) in one ``AgentConfigError``; a pydantic error is turned into one here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from citygw.contract.agent_config import (
    BROKER_URL_ENV,
    AgentConfig,
    AgentConfigError,
    Problem,
    ProfileCheck,
    check_consoles,
    check_overlays,
    check_references,
    check_reporting,
)
from citygw.contract.bus_time import check_bus_time
from firmware_bridge.profile import DeadbandError


def _default_profile_check(name: str) -> object:
    from firmware_bridge.profile import load_profile

    return load_profile(name)


def validate_agent_config(
    raw: dict[str, Any], source: Path, *, profiles: ProfileCheck | None = None, env_url: str | None = None
) -> AgentConfig:
    """Validate and cross-check a config already parsed (a file, or a remote ``config`` message)."""
    file = source
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise AgentConfigError(file, [_problem(error, env_url) for error in exc.errors()]) from None
    problems = check_references(config, profiles or _default_profile_check)
    if not problems:
        problems = check_overlays(config, profiles or _default_profile_check)
    if not problems:
        problems = check_consoles(config, profiles or _default_profile_check)
    if not problems:
        problems = check_reporting(config, profiles or _default_profile_check)
    if not problems:
        problems = check_bus_time(config, profiles or _default_profile_check)
    if problems:
        raise AgentConfigError(file, problems)
    return config


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or correct its spelling",
    "string_pattern_mismatch": "use letters, digits and the allowed punctuation only",
    "union_tag_invalid": "set kind to tcp, rtu, nmea, mbus, opcua, lorawan, dialin or dlms",
    "union_tag_not_found": "add kind: tcp, rtu, nmea, mbus, opcua, lorawan, dialin or dlms",
}


def _problem(error: Any, env_url: str | None) -> Problem:
    kinds = ("tcp", "rtu", "nmea", "mbus", "opcua", "lorawan", "dialin", "dlms")
    loc = [part for part in error["loc"] if part not in kinds or error["loc"][0] != "lines"]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        field += ".kind"
    if env_url and field.startswith("broker.url"):
        field += f" (from {BROKER_URL_ENV})"
    message = str(error["msg"])
    cause = error.get("ctx", {}).get("error")
    secret = field.startswith("broker.url") or ".broker.url" in field  # may carry a password
    if not secret and "input" in error and not isinstance(error["input"], dict | list):
        message += f" (got {error['input']!r})"
    fix = _FIXES.get(error["type"], "correct the value")
    if error["type"] == "string_pattern_mismatch":
        fix = f"match {error['ctx']['pattern']}"
    if isinstance(cause, DeadbandError):
        message, fix = cause.what, cause.fix
    return Problem(field or "(file)", message, fix)
