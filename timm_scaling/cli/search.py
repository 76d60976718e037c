"""`timm-scaling search`: the compound coefficients at phi=1 (the paper's step 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from timm_scaling.cli.base import app, stop_code, stop_word, user_errors


@app.command("search")
@user_errors
def search_cmd(
    dataset: Annotated[
        str | None, typer.Option(help="Proxy data set.", show_default="the recipe's")
    ] = None,
    base_model: Annotated[str, typer.Option(help="The model phi scales.")] = "effnet_b0",
    target: Annotated[float, typer.Option(help="Cost factor alpha*beta^2*gamma^2 aimed at.")] = 2.0,
    tolerance: Annotated[
        float, typer.Option(help="Accepted distance from the target, as a fraction of it.")
    ] = 0.1,
    grid_step: Annotated[float, typer.Option(help="Grid spacing of alpha, beta, gamma.")] = 0.05,
    max_candidates: Annotated[
        int | None, typer.Option(help="Keep only the N candidates closest to the target.")
    ] = None,
    proxy_epochs: Annotated[int, typer.Option(help="Epochs of each proxy run (rung 0).")] = 2,
    halving: Annotated[
        bool, typer.Option(help="Successive halving: the better half trains twice as long.")
    ] = False,
    exact_cost: Annotated[
        bool, typer.Option(help="Constrain measured MACs (timm's rounding), not the nominal.")
    ] = False,
    seeds: Annotated[int, typer.Option(help="Proxy runs per candidate; top-1 is averaged.")] = 1,
    shard: Annotated[
        str | None, typer.Option(help="Train only shard K/N of each rung's runs.")
    ] = None,
    output: Annotated[Path, typer.Option(help="Run folders, search.csv, search.json.")] = Path(
        "search"
    ),
    register: Annotated[
        bool,
        typer.Option(
            help="Register the phi 1..7 ladder of the chosen coefficients and print its names "
            "(recipes, sweeps and profile resolve those names in any process)."
        ),
    ] = False,
    recipe: Annotated[str, typer.Option(help="The proxy recipe.")] = "digits",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a proxy recipe key: key=value.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan (candidates, proxy runs, time) and train nothing.")
    ] = False,
) -> None:
    """Find compound coefficients alpha, beta, gamma at phi=1 (the paper's step 1).

    Prints the plan first: candidates, proxy runs per rung and the projected time."""
    from rich import box
    from rich.table import Table

    from timm_scaling import search, search_plan
    from timm_scaling.runs import DIVERGED_FILE
    from timm_scaling.tables import print_table

    settings = search.SearchSettings(
        target=target,
        tolerance=tolerance,
        grid_step=grid_step,
        max_candidates=max_candidates,
        exact_cost=exact_cost,
        recipe=recipe,
        dataset=dataset,
        overrides=tuple(set_ or ()),
        proxy_epochs=proxy_epochs,
        halving=halving,
        seeds=seeds,
        shard=shard,
        output=output,
        base_model=base_model,
    )

    def on_run(rung: int, index: int, total: int, run, status: str) -> None:
        typer.echo(
            f"rung {rung} ({run.epochs} epoch{'s' * (run.epochs > 1)}) [{index + 1}/{total}] "
            f"{run.model} "
            f"seed {run.seed}: {status}"
        )

    plan = search_plan.plan(settings)
    for line in search_plan.describe_plan(settings, plan):
        typer.echo(line)
    if dry_run:
        return
    try:
        result = search.run_search(settings, on_run, plan.candidates)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the finished proxy runs stay
        typer.echo(
            f"{stop_word(stop)}: the proxy runs finished so far are kept in {output} (an "
            "unfinished one resumes from its last finished epoch); run the same command again "
            "to go on",
            err=True,
        )
        raise typer.Exit(stop_code(stop)) from None
    headers, cells = _table(result.rows)
    title = f"Compound coefficient search: {len(result.candidates)} candidates"
    table = Table(*headers, title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for row in cells:
        table.add_row(*row)
    print_table(table)
    typer.echo(f"wrote {', '.join(str(path) for path in result.written)}")
    if result.diverged:
        typer.echo(
            f"{len(result.diverged)} proxy run(s) diverged, so their candidates rank last "
            f"({', '.join(folder.name for folder, _ in result.diverged)}); each folder's "
            f"{DIVERGED_FILE} says how"
        )
    if result.chosen is None:
        typer.echo(
            f"{result.pending} run(s) pending on other shards: run each shard again once they "
            "finish"
        )
        return
    if result.tie:
        typer.echo(f"{search.NO_WINNER} ({result.tie})")
    typer.echo(f"{result.chosen}{' (a tie: not distinguishable)' if result.tie else ''}")
    if register:
        typer.echo(f"registered: {' '.join(search.register_ladder(result.chosen))}")


TABLE_COLUMNS = (
    ("#", "rank"),
    ("alpha", "alpha"),
    ("beta", "beta"),
    ("gamma", "gamma"),
    ("nominal", "nominal"),
    ("px", "img_size"),
    ("MACs/B0", "gmacs_ratio"),
    ("epochs", "epochs"),
)


def _cell(value: object) -> str:
    if value is None:  # pending on another shard (or diverged: see _table())
        return "-"
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the terminal table (the CSV keeps every column at full precision)."""
    seeds = [key for key in rows[0] if key.startswith("top1_s")]
    keys = [(header, key) for header, key in TABLE_COLUMNS]
    keys += [(key.replace("_", " "), key) for key in seeds]
    keys += [("top1" if len(seeds) == 1 else "top1 mean", "top1_mean"), ("chosen", "chosen")]
    if len(seeds) == 1:
        keys = [pair for pair in keys if pair[1] != seeds[0]]
    cells = [
        ["diverged" if row["diverged"] and row[key] is None else _cell(row[key]) for _, key in keys]
        for row in rows
    ]
    return [header for header, _ in keys], cells
