"""The ``timm-scaling`` command: parse, call one function, print.

Heavy imports (torch, timm, calflops) happen inside the commands that need them, so
``timm-scaling --help`` and ``timm-scaling frontier`` start fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import typer

from timm_scaling.errors import UserError

app = typer.Typer(
    name="timm-scaling",
    help="Scaled EfficientNet-B0 variants as timm models: list, profile, train, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Scaled EfficientNet-B0 variants as timm models: list, profile, train, compare."""


def user_errors(fn: Callable) -> Callable:
    """Turn a UserError into one line on stderr and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


@app.command("list")
@user_errors
def list_cmd() -> None:
    """Every registered variant: multipliers, input size, params, blocks, nominal FLOP factor."""
    from rich.console import Console
    from rich.table import Table

    from timm_scaling.models import variant_table

    table = Table(title="timm-scaling variants (EfficientNet-B0 through timm's builder)")
    rows = variant_table()
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    Console().print(table)


def main() -> None:
    app(prog_name="timm-scaling")


if __name__ == "__main__":
    sys.exit(main())
