"""Rich tables printed whole, never cut: a long model name or header folds onto a second line
on a terminal instead of ending in "…", and in a pipe or a file (where rich assumes 80
columns) the table is as wide as its contents, one line a row."""

from __future__ import annotations

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
