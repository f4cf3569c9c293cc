"""CSV cells that a spreadsheet shows as text, never runs as a formula (OWASP "CSV injection").

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``, ``+``, ``-`` or ``@``
(and a leading tab, CR, LF or NUL hides such a start): a stored string ``=HYPERLINK(...)`` would
become a live link in an engineer's sheet. Such string cells get a leading ``'``, which the
spreadsheets take as "text" and do not show. Numbers are written as numbers, so -3.5 stays -3.5;
JSON exports carry every value exactly and never pass through here.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


def csv_cell(value: object) -> str:
    """``value`` as cell text: None empty, true/false, strings neutralised, anything else ``str()``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)
