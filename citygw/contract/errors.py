"""Errors every room may raise to the CLI."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot run; the message names the file, the field and the fix."""
