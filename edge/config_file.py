"""The agent's own config file: YAML from disk, ``CITYGW_BROKER_URL`` over ``broker.url``, TLS files readable.

The schema and its cross-checks are the shared contract (``citygw.contract.agent_config``), so the
API refuses a pushed config the agent would refuse; reading the file, the environment and the files
it names is the agent's business, here.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from citygw.contract.agent_config import BROKER_URL_ENV, AgentConfig, AgentConfigError, Problem, ProfileCheck
from citygw.contract.agent_config_check import validate_agent_config


def load_agent_config(
    path: str | Path, *, profiles: ProfileCheck | None = None, broker_url: str | None = None
) -> AgentConfig:
    """Read, validate and cross-check an agent config file; raises AgentConfigError.

    ``broker_url`` (edge/settings.py: ``--broker``, else ``CITYGW_BROKER_URL``), else that variable,
    replaces ``broker.url`` (so a URL with a password need not sit in the file). ``profiles`` loads a
    profile by name (default: ``firmware_bridge.profile.load_profile``) and raises if it does not exist.
    """
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentConfigError(
            file, [Problem("(file)", f"cannot read it: {exc.strerror}", "check the path")]
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise AgentConfigError(
            file, [Problem(where, f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from exc
    if not isinstance(raw, dict):
        raise AgentConfigError(
            file, [Problem("(file)", "the top level is not a mapping", "start with agent_id: ...")]
        )
    env_url = broker_url or os.environ.get(BROKER_URL_ENV)
    if env_url:
        broker = raw.get("broker")
        raw["broker"] = {**(broker if isinstance(broker, dict) else {}), "url": env_url}
    config = validate_agent_config(raw, file, profiles=profiles, env_url=env_url)
    problems = check_files(config)
    if problems:
        raise AgentConfigError(file, problems)
    return config


def check_files(config: AgentConfig) -> list[Problem]:
    """Files the config names that the agent must read later (TLS): readable now, or a problem."""
    fixes = {
        "ca_file": "give the path of a PEM CA bundle the agent's user can read (relative to the agent's "
        "working directory), or remove ca_file to trust the system CAs",
        "cert_file": "give the path of the agent's certificate (citygw pki issue agent ID, docs/deploy.md), "
        "readable by the agent's user, or remove cert_file and key_file to log in with a password",
        "key_file": "give the path of the key issued with cert_file, readable by the agent's user (0600)",
    }
    problems = []
    for field, path in config.broker.tls_files.items():
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            problems.append(Problem(f"broker.{field}", f"cannot read {path}: {exc.strerror}", fixes[field]))
    return problems
