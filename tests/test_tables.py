"""Tables are printed whole: no cell cut with "…", in a pipe or on a narrow terminal."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from timm_scaling.tables import print_table

NAME = "effnet_b0_w2p17_and_a_long_suffix"


def table() -> Table:
    table = Table(title="Cost")
    for column in ("model", "train_samples_per_sec", "peak_mem_mb", "note"):
        table.add_column(column)
    table.add_row(NAME, "123.4", "5678", "prose that may wrap at its spaces " * 3)
    return table


def test_in_a_pipe_a_row_is_one_whole_line():
    out = io.StringIO()  # not a terminal: rich would squeeze the table into 80 columns
    print_table(table(), Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    assert "…" not in out.getvalue()
    assert len(lines) == 6  # title, top border, header, rule, the row, bottom border
    header, row = lines[2], lines[4]
    assert all(name in header for name in ("model", "train_samples_per_sec", "peak_mem_mb"))
    assert NAME in row and ("prose that may wrap at its spaces " * 3).strip() in row
    assert all(line[-1] in "┓┃┩│┘" for line in lines[1:])  # no line cropped


def test_on_a_narrow_terminal_names_fold_instead_of_being_cut():
    out = io.StringIO()
    print_table(table(), Console(file=out, width=50, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 50
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if "│" in line)
    assert NAME in cells  # the name's pieces, read down its column
