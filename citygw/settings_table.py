"""docs/configuration.md's table of every setting of every service: ``python -m citygw.settings_table``.

The models are the services' (citygw.contract.settings); tests/citygw/test_settings.py holds the
table in the docs equal to this one.
"""

from __future__ import annotations

from citygw.contract.settings import TABLE_HEAD, ServiceSettings, table_rows


def service_models() -> list[type[ServiceSettings]]:
    """Every service's settings model, in the table's order."""
    from api.settings import ApiSettings
    from collector.settings import CollectorSettings
    from edge.settings import EdgeSettings

    return [ApiSettings, CollectorSettings, EdgeSettings]


def markdown_table() -> str:
    """docs/configuration.md's table of every setting of every service."""
    return "\n".join([TABLE_HEAD, *(row for model in service_models() for row in table_rows(model))])


if __name__ == "__main__":
    print(markdown_table())
