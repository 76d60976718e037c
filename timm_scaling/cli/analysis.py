"""Commands that look at models and results: list, frontier, curves, profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from timm_scaling.cli.base import (
    app,
    user_errors,
)
from timm_scaling.errors import UserError

LIST_COLUMNS = ("model", "method", "depth", "width", "resolution", "input", "params_m", "blocks")


@app.command("list")
@user_errors
def list_cmd(
    as_csv: Annotated[bool, typer.Option("--csv", help="Every column, as CSV.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Every column, as JSON.")] = False,
) -> None:
    """Every registered variant: multipliers, input size, params (M), real blocks.

    --csv and --json add the blocks per stage, the nominal blocks and the nominal FLOP factor."""
    import json

    from timm_scaling.models import variant_table
    from timm_scaling.tables import csv_text

    if as_csv and as_json:
        raise UserError("--csv and --json: pick one")
    rows = variant_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    elif as_csv:
        typer.echo(csv_text(rows), nl=False)
    else:  # plain aligned columns: narrow enough for 80, never cut in a pipe
        cells = [LIST_COLUMNS] + [tuple(_list_cell(row, c) for c in LIST_COLUMNS) for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(LIST_COLUMNS))]
        align = [str.ljust] * 2 + [str.rjust] * (len(LIST_COLUMNS) - 2)  # text, then numbers
        for line in cells:
            text = (pad(c, w) for pad, c, w in zip(align, line, widths, strict=True))
            typer.echo("  ".join(text).rstrip())


def _list_cell(row: dict[str, object], column: str) -> str:
    value = row[column]
    if column == "params_m":
        return f"{value:.2f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command("frontier")
@user_errors
def frontier_cmd(
    csv: Annotated[
        list[Path],
        typer.Argument(
            help="report.csv files, or timm's results CSVs with their benchmark (cost) CSVs: "
            "accuracy rows take their cost by (architecture, image size)."
        ),
    ],
    x: Annotated[
        str, typer.Option("--x", help="Cost column: gmacs, gflops, param_count, macts, ...")
    ] = "gmacs",
    y: Annotated[str, typer.Option("--y", help="Accuracy column.")] = "top1",
    group: Annotated[
        str,
        typer.Option(
            "--group",
            help="Column to group by; method: ours by scaling method, timm's by family and "
            "pretrained tag (resnet.tv_in1k); family: without the tag.",
        ),
    ] = "method",
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            help="Analyse only these models (repeatable; fnmatch on the full name with its "
            "tag: 'tf_efficientnet_b?.in1k'); the rest are grey in the plot.",
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Keep rows with COLUMN=VALUE (repeatable): epochs=8."),
    ] = None,
    at: Annotated[
        list[float] | None,
        typer.Option(
            "--at", help="Compare at this cost (repeatable); default: each reference point."
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="The group every other group is compared with.",
            show_default="compound",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", "--out", help="Output folder; default: beside the first CSV."
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="What to print: table, json or markdown.")
    ] = "table",
    show_all: Annotated[
        bool, typer.Option("--all", help="Print every point and group, however many.")
    ] = False,
    eval_size: Annotated[
        int | None,
        typer.Option(
            "--eval-size",
            help="Evaluation set size N (ImageNet val 50000): the noise floor sqrt(p(1-p)/N), "
            "and with one run per point the verdicts' intervals from it alone.",
        ),
    ] = None,
    measure_missing: Annotated[
        bool,
        typer.Option(
            "--measure-missing",
            help="Measure the cost of rows the cost tables lack (our profile; imports torch).",
        ),
    ] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap draws.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap RNG seed.")] = 0,
) -> None:
    """Accuracy against cost per scaling method or family: Pareto front, fits, verdict, plot.

    Writes frontier.json, frontier.md, frontier.png and frontier.svg into --out.

    Exit codes: 0 done; 2 bad option; 3 bad input (a missing or empty file,
    missing columns, or no usable row). Rows with non-numeric values, or with no
    cost in the cost tables, are dropped with a warning on stderr.
    """
    from timm_scaling import frontier

    frontier.check_options(at or (), eval_size, bootstrap, fmt)
    result, written = frontier.run(
        csv,
        x,
        y,
        group,
        at or (),
        reference,
        eval_size,
        bootstrap,
        seed,
        out,
        models=models or (),
        conditions=where or (),
        measure_missing=measure_missing,
        everything=show_all,
    )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    frontier.show(result, fmt, everything=show_all)
    if fmt == "table":
        typer.echo(f"wrote {', '.join(str(path) for path in written)}")


@app.command("curves")
@user_errors
def curves_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders, folders of run folders (a --output), or a sweep's report folder."
        ),
    ],
    x: Annotated[str, typer.Option("--x", help="The x axis: epoch, images or compute.")] = "epoch",
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Add a panel of this metrics.jsonl key (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            "--out",
            help="Output folder; default: the PATH (several: their folder).",
        ),
    ] = None,
) -> None:
    """Training curves: validation top-1, training loss and learning rate per model.

    One line per model, coloured by scaling method, its seeds as a band (mean +- std). Writes
    curves.png and curves.svg into --out. Exit codes: 0 done; 2 bad option; 3 bad input (no run
    folders, nothing to draw).
    """
    from timm_scaling import curves

    drawn, written = curves.run(paths, x, metric or (), out)
    for warning in drawn.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{len(drawn.runs)} run(s) drawn; wrote {', '.join(map(str, written))}")


def _to_stderr(line: str) -> None:
    typer.echo(line, err=True)


@app.command("profile")
@user_errors
def profile_cmd(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model names or globs, ours or timm's (effnet_b0_w*, resnet50), or recipes.",
            show_default=False,
        ),
    ] = None,
    base_size: Annotated[
        int | None,
        typer.Option(
            help="Image size before the resolution multiplier.", show_default="224, the cfg"
        ),
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Batch size of the speed measurement.")] = 64,
    device: Annotated[
        str, typer.Option(help="Where speed is measured: cpu, cuda, cuda:1.")
    ] = "cpu",
    speed: Annotated[
        bool, typer.Option("--speed/--no-speed", help="Measure throughput and peak memory.")
    ] = True,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write the rows here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    paper: Annotated[
        bool, typer.Option("--paper", help="Our cost beside the paper's Tables 2 and 7.")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option(help="Also write the table(s) as Markdown here.")
    ] = None,
    match_gmacs: Annotated[
        float | None,
        typer.Option(help="Register depth, width and resolution multipliers costing this +-3%."),
    ] = None,
    model_kwarg: Annotated[
        list[str] | None,
        typer.Option(
            "--model-kwarg", help="Build every model with this timm kwarg: output_stride=8."
        ),
    ] = None,
) -> None:
    """Params, MACs, FLOPs, activations (counted), throughput and peak memory (measured)."""
    import json

    from rich.table import Table

    from timm_scaling import paper as tables_of_paper
    from timm_scaling import profile
    from timm_scaling.files import atomic_write
    from timm_scaling.tables import csv_text, print_table

    if paper:
        if models or csv_path or match_gmacs is not None:
            raise UserError("--paper takes no models, --csv or --match-gmacs; use --markdown PATH")
        tables = {
            "Table 2: B0..B7 (paper's coefficients and resolutions)": tables_of_paper.paper_table2(
                num_classes
            ),
            "Table 7: B0 scaled along one axis, and compound": tables_of_paper.paper_table7(
                num_classes
            ),
        }
        if markdown:
            atomic_write(markdown, tables_of_paper.paper_markdown(num_classes))
    elif match_gmacs is not None:
        if models:
            raise UserError("--match-gmacs takes no models: it finds them")
        rows = profile.match_gmacs(match_gmacs, base_size, num_classes)
        tables = {f"Single-axis variants at {match_gmacs:g} GMACs (+-3%)": rows}
    elif models:
        from timm_scaling.recipes import Override, parse_override

        kwargs = dict(parse_override(Override(t, f"--model-kwarg {t}")) for t in model_kwarg or ())
        rows = profile.profile_rows(
            models, base_size, num_classes, batch_size, device, speed, kwargs, _to_stderr
        )
        tables = {"Cost (MACs: multiply-accumulates; FLOPs: calflops' count)": rows}
    else:
        raise UserError("name at least one model (or a glob), or pass --paper or --match-gmacs")
    if csv_path and not paper:
        atomic_write(csv_path, csv_text(rows))
    if markdown and not paper:
        atomic_write(markdown, profile.to_markdown(rows))
    if as_json:
        typer.echo(json.dumps(tables if paper else rows, indent=1))
        return
    for title, table_rows in tables.items():
        table = Table(title=title)
        for column in table_rows[0]:
            table.add_column(column, justify="left" if column in profile.TEXT_COLUMNS else "right")
        for row in table_rows:
            table.add_row(*(profile.format_cell(key, value) for key, value in row.items()))
        print_table(table)
