"""One way to configure every service: defaults < settings file < environment < command line.

Each service has one settings model, a ``ServiceSettings`` (api.settings.ApiSettings,
collector.settings.CollectorSettings, edge.settings.EdgeSettings). A setting ``name`` is the key
``name`` in the service's file (TOML or YAML, ``--config FILE``), the variable ``CITYGW_NAME`` and
the flag ``--name`` (or an older flag the model keeps in ``cli_flags``). ``load`` layers the sources
and remembers where each value came from, so an error names the setting, its source and the fix;
``add_arguments`` makes the flags from the model, ``table_rows`` its rows of docs/configuration.md's
table (citygw/settings_table.py).
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as EnvError

from citygw.contract.errors import ConfigError

ENV_PREFIX = "CITYGW_"
FILE_SUFFIXES = (".toml", ".yaml", ".yml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

S = TypeVar("S", bound="ServiceSettings")


class SettingsError(ConfigError, ValueError):
    """Settings that cannot work; each line names a setting, where its value came from and the fix."""


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: ``kind`` and the name it has there."""

    kind: Literal["default", "file", "environment", "command line", "argument"]
    name: str = ""
    file: Path | None = None

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file {self.file}, key {self.name}"
        if self.kind == "default":
            return "default"
        return f"{self.kind} {self.name}"

    def fix(self) -> str:
        """Where to change the value."""
        return {
            "file": f"change key {self.name} in {self.file}",
            "environment": f"change or unset {self.name}",
            "command line": f"change {self.name}",
            "argument": f"change the argument {self.name}",
        }.get(self.kind, "")


class ServiceSettings(BaseSettings):
    """The base of each service's one settings model; ``load`` makes them with their sources."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        # Inputs stay out of a ValidationError's text: URLs may carry passwords and tokens.
        hide_input_in_errors=True,
        env_ignore_empty=True,  # `CITYGW_X=` in an env file counts as unset
    )

    service: ClassVar[str] = ""
    """The service's name in docs/configuration.md and in error messages."""
    cli_flags: ClassVar[Mapping[str, str]] = {}
    """Flags older than the model: setting -> flag (the others are ``--name-with-dashes``)."""
    file_keys: ClassVar[Mapping[str, str | None]] = {}
    """Settings whose file key is not their name; None: not in a file."""
    has_file: ClassVar[bool] = True
    """Whether the service reads a settings file of its own (``--config FILE``)."""

    log_level: str = Field(
        default="INFO",
        pattern="^(" + "|".join(LOG_LEVELS) + ")$",
        description="least severe log lines written: DEBUG, INFO, WARNING or ERROR (-v: DEBUG)",
    )
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    @classmethod
    def env_name(cls, name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def flag(cls, name: str) -> str:
        return cls.cli_flags.get(name, "--" + name.replace("_", "-"))

    @classmethod
    def file_key(cls, name: str) -> str | None:
        if name in cls.file_keys:
            return cls.file_keys[name]
        return name if cls.has_file else None

    @classmethod
    def ways(cls, name: str) -> str:
        """Every way to set ``name``, for a message about a setting that was not given."""
        key = cls.file_key(name)
        return ", ".join(
            part
            for part in (f"key {key} in the settings file" if key else "", cls.env_name(name), cls.flag(name))
            if part
        )

    def source(self, name: str) -> Source:
        return self._sources.get(name, Source("default"))

    def describe(self, name: str) -> str:
        """``name (where from)``, for errors found after loading (a store that cannot be opened)."""
        source = self.source(name)
        if source.kind == "default":
            return f"{name} (default; set it with {self.ways(name)})"
        return f"{name} ({source})"


def read_file(cls: type[ServiceSettings], path: Path) -> dict[str, Any]:
    """The settings in a TOML or YAML file: a flat table of setting names; SettingsError otherwise."""
    where = f"{cls.service} settings file {path}"
    if path.suffix not in FILE_SUFFIXES:
        raise SettingsError(f"{where}: name it *.toml or *.yaml; fix: rename it or give another --config")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read it ({exc.strerror}); fix: check --config") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"{where}: not valid {path.suffix[1:].upper()}: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SettingsError(
            f"{where}: the top level is not a table of settings; fix: write `name = value` lines"
        )
    keys = {key: name for name in cls.model_fields if (key := cls.file_key(name)) is not None}
    problems = []
    for key in raw:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md"
            problems.append(f"{key}: no such {cls.service} setting; fix: {hint}")
    if problems:
        raise SettingsError(f"{where}:\n  " + "\n  ".join(problems))
    return {keys[key]: value for key, value in raw.items()}


def load(
    cls: type[S],
    *,
    file: Path | None = None,
    cli: Mapping[str, object] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> S:
    """``cls`` from its defaults, ``file``, the environment and ``cli`` (setting -> value), each
    winning over the one before; ``overrides`` (a caller's, e.g. the demo's) win over all.

    Raises SettingsError naming each bad setting, where it came from and the fix.
    """
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    if file is not None:
        for name, value in read_file(cls, file).items():
            values[name], sources[name] = value, Source("file", cls.file_key(name) or name, file)
    try:
        env = EnvSettingsSource(cls)()
    except EnvError as exc:  # a complex value that is not JSON
        raise SettingsError(f"invalid {cls.service} settings: {exc}") from None
    for name, value in env.items():
        values[name], sources[name] = value, Source("environment", cls.env_name(name))
    for name, value in (cli or {}).items():
        values[name], sources[name] = value, Source("command line", cls.flag(name))
    for name, value in (overrides or {}).items():
        values[name], sources[name] = value, Source("argument", name)
    try:
        settings = cls.model_validate(values)
    except ValidationError as exc:
        lines = [_error_line(cls, error, sources) for error in exc.errors()]
        raise SettingsError(f"invalid {cls.service} settings:\n  " + "\n  ".join(lines)) from None
    settings._sources = sources
    return settings


def _error_line(cls: type[ServiceSettings], error: Any, sources: Mapping[str, Source]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["loc"]:
        name = str(error["loc"][0])
        if name not in cls.model_fields:
            return f"{name}: no such {cls.service} setting ({sources.get(name, Source('argument', name))})"
        source = sources.get(name)
        if source is None:
            return f"{name} (not set): {message}; fix: set it with {cls.ways(name)}"
        return f"{name} ({source}): {message}; fix: {source.fix()}"
    # A check of several settings: name where each one it mentions came from.
    named = [name for name in cls.model_fields if re.search(rf"\b{name}\b", message)]
    where = "; ".join(
        f"{name} from {sources[name]}" if name in sources else f"{name} not set ({cls.ways(name)})"
        for name in named
    )
    return f"{message} [{where}]" if where else message


def add_arguments(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """A flag per setting of ``cls`` (absent from the namespace unless given), and ``--config``."""
    also = "a key of the settings file and a CITYGW_* variable" if cls.has_file else "a CITYGW_* variable"
    group = parser.add_argument_group(
        f"{cls.service} settings",
        f"each also {also}; the command line wins over the environment, which wins over the file "
        "(docs/configuration.md)",
    )
    if cls.has_file:
        group.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help=f"the {cls.service} settings file (*.toml or *.yaml), keys as in docs/configuration.md",
        )
    for name, field in cls.model_fields.items():
        options: dict[str, Any] = {"dest": f"setting_{name}", "default": argparse.SUPPRESS}
        if field.annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = "FILE" if field.annotation in (Path, Path | None) else "VALUE"
        text = (field.description or "").replace("%", "%%")
        group.add_argument(
            cls.flag(name), help=f"{text}; ${cls.env_name(name)} (default {show_default(field)})", **options
        )


def cli_values(args: argparse.Namespace, cls: type[ServiceSettings]) -> dict[str, object]:
    """The settings given on the command line (setting -> value)."""
    return {
        name: getattr(args, f"setting_{name}")
        for name in cls.model_fields
        if hasattr(args, f"setting_{name}")
    }


def load_from_args(args: argparse.Namespace, cls: type[S]) -> S:
    """``cls`` from ``--config`` (if any), the environment and the flags ``add_arguments`` made."""
    return load(cls, file=getattr(args, "config", None) if cls.has_file else None, cli=cli_values(args, cls))


def show_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if field.is_required():
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "none"
    return str(value)


TABLE_HEAD = (
    "| setting | service | file key | environment | command line | default | meaning |\n"
    "|---|---|---|---|---|---|---|"
)


def table_rows(cls: type[ServiceSettings]) -> list[str]:
    rows = []
    for name, field in cls.model_fields.items():
        key = cls.file_key(name)
        cells = (
            name,
            cls.service,
            f"`{key}`" if key else "—",
            f"`{cls.env_name(name)}`",
            f"`{cls.flag(name)}`",
            f"`{show_default(field)}`",
            (field.description or "").replace("|", "\\|"),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return rows
