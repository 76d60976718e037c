"""Rows as tables. Rich tables printed whole, never cut: a long model name or header folds onto
a second line on a terminal instead of ending in "…", and in a pipe or a file (where rich
assumes 80 columns) the table is as wide as its contents, one line a row. Rows as CSV text:
one function for every CSV we write but the report (which keeps its own number format)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping

# Wider than any table of ours: the width a table takes when nothing limits it.
UNLIMITED = 10_000


def print_table(table, console=None) -> None:
    """Print ``table`` (a rich Table) on ``console`` (default: stdout) without cutting a cell."""
    from rich.console import Console

    console = console or Console()
    for column in table.columns:
        column.overflow = "fold"
    if not console.is_terminal:  # one line a row, however wide: to read, grep or diff
        natural = console.measure(table, options=console.options.update_width(UNLIMITED))
        console = Console(file=console.file, width=max(console.width, natural.maximum))
    console.print(table)


def csv_text(rows: Iterable[Mapping[str, object]], columns: Iterable[str] | None = None) -> str:
    """``rows`` as CSV text with a header line: ``columns`` (default: every key of the rows, in
    the order first seen); a missing or ``None`` cell is empty, a key not in ``columns`` left
    out."""
    rows = list(rows)
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
