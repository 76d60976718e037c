"""The ``timm-scaling`` command: parse, call one function, print.

Heavy imports (torch, timm, calflops) happen inside the commands that need them, so
``timm-scaling --help`` and ``timm-scaling frontier`` start fast.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

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


PLAN_HELP = (
    "Train nothing: measure each run briefly on this machine (the real loop, the recipe's "
    "settings; synthetic data of the same shape where the data set is absent) and write its "
    "projected time and peak memory to plan.csv."
)
PLAN_SECONDS_HELP = (
    "With --plan: seconds of timed updates per run [default: 20 on a GPU, 5 on a CPU]."
)


def _show_plan(rows: list, path: Path, seconds: float, jobs: int | None = None) -> None:
    """The plan's table and summary lines, then where it was written."""
    from timm_scaling import plan

    typer.echo(plan.render(rows))
    for line in plan.summary(rows, jobs):
        typer.echo(line)
    typer.echo(f"wrote {path} (measured in {plan.duration(seconds)})")


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


@app.command("frontier")
@user_errors
def frontier_cmd(
    csv: Annotated[
        list[Path],
        typer.Argument(help="report.csv files, or timm results CSVs (infer_gmacs etc.); merged."),
    ],
    x: Annotated[
        str, typer.Option("--x", help="Cost column: gmacs, gflops, param_count, macts, ...")
    ] = "gmacs",
    y: Annotated[str, typer.Option("--y", help="Accuracy column.")] = "top1",
    group: Annotated[
        str, typer.Option("--group", help="Column to group by; method is read from model names.")
    ] = "method",
    at: Annotated[
        list[float] | None,
        typer.Option(
            "--at", help="Compare at this cost (repeatable); default: each compound point."
        ),
    ] = None,
    reference: Annotated[
        str, typer.Option("--reference", help="The group every other group is compared with.")
    ] = "compound",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder; default: beside the first CSV.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="What to print: table, json or markdown.")
    ] = "table",
    eval_size: Annotated[
        int | None,
        typer.Option(
            "--eval-size", help="Evaluation set size N, for the noise floor sqrt(p(1-p)/N)."
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap draws.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap RNG seed.")] = 0,
) -> None:
    """Accuracy against cost per scaling method: Pareto front, fits, verdict, plot.

    Writes frontier.json, frontier.md, frontier.png and frontier.svg into --out.

    Exit codes: 0 done; 2 bad option; 3 bad input (a missing or empty file,
    missing columns, or no usable row). Rows with non-numeric values are dropped,
    with a warning on stderr.
    """
    from timm_scaling import frontier

    frontier.check_options(at or (), eval_size, bootstrap, fmt)
    result, written = frontier.run(
        csv, x, y, group, at or (), reference, eval_size, bootstrap, seed, out
    )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    frontier.show(result, fmt)
    if fmt == "table":
        typer.echo(f"wrote {', '.join(str(path) for path in written)}")


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
        typer.Option(help="Image size before the resolution multiplier [default: 224, the cfg]."),
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
        Path | None, typer.Option(help="With --paper: write the tables as Markdown here.")
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

    from rich.console import Console
    from rich.table import Table

    from timm_scaling import profile
    from timm_scaling.report import atomic_write

    if paper:
        if models or csv_path or match_gmacs is not None:
            raise UserError("--paper takes no models, --csv or --match-gmacs; use --markdown PATH")
        tables = {
            "Table 2: B0..B7 (paper's coefficients and resolutions)": profile.paper_table2(
                num_classes
            ),
            "Table 7: B0 scaled along one axis, and compound": profile.paper_table7(num_classes),
        }
        if markdown:
            atomic_write(markdown, profile.paper_markdown(num_classes))
    elif match_gmacs is not None:
        if models:
            raise UserError("--match-gmacs takes no models: it finds them")
        rows = profile.match_gmacs(match_gmacs, base_size, num_classes)
        tables = {f"Single-axis variants at {match_gmacs:g} GMACs (+-3%)": rows}
    elif models:
        from timm_scaling.recipes import parse_override

        kwargs = dict(parse_override(text) for text in model_kwarg or ())
        rows = profile.profile_rows(
            models, base_size, num_classes, batch_size, device, speed, kwargs
        )
        tables = {"Cost (MACs: multiply-accumulates; FLOPs: calflops' count)": rows}
    else:
        raise UserError("name at least one model (or a glob), or pass --paper or --match-gmacs")
    if csv_path and not paper:
        atomic_write(csv_path, profile.to_csv(rows))
    if as_json:
        typer.echo(json.dumps(tables if paper else rows, indent=1))
        return
    for title, table_rows in tables.items():
        table = Table(title=title)
        for column in table_rows[0]:
            table.add_column(column, justify="left" if column in profile.TEXT_COLUMNS else "right")
        for row in table_rows:
            table.add_row(*(profile.format_cell(key, value) for key, value in row.items()))
        Console().print(table)


@app.command("train")
@user_errors
def train_cmd(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a recipe .yaml file.")],
    dataset: Annotated[
        str | None, typer.Option(help="cifar10, cifar100, digits, folder or synthetic.")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per update, over all processes.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    output: Annotated[Path, typer.Option(help="Run folders and report.csv go here.")] = Path(
        "runs"
    ),
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    num_processes: Annotated[
        int | None, typer.Option(min=1, help="Launch this many Accelerate processes.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe key: --set key=value.")
    ] = None,
    plan: Annotated[bool, typer.Option("--plan", help=PLAN_HELP)] = False,
    plan_seconds: Annotated[float | None, typer.Option(help=PLAN_SECONDS_HELP)] = None,
) -> None:
    """Train RECIPE into OUTPUT/<recipe>-<model>-s<seed>/ and add its row to OUTPUT/report.csv."""
    import logging
    import os

    from timm_scaling.recipes import load_recipe
    from timm_scaling.runs import finished

    options = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs}
    options.update(batch_size=batch_size, lr=lr, seed=seed)
    overrides = [f"{k}={v}" for k, v in options.items() if v is not None] + list(set_ or [])
    resolved = load_recipe(recipe, overrides)
    if plan:
        from timm_scaling import plan as planning

        if resume:
            raise UserError("--plan measures a run without training it: drop --resume")
        if (num_processes or 1) > 1:
            raise UserError("--plan measures the run in one process: drop --num-processes")
        planning.budget(False, plan_seconds)  # a bad --plan-seconds fails before the model
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        started = time.perf_counter()
        row = planning.measure(resolved, plan_seconds)
        path = planning.write(output / planning.PLAN_FILE, [row])
        _show_plan([row], path, time.perf_counter() - started)
        return
    done = finished(output, resolved)
    if done is not None:
        typer.echo(f"{done} is finished (its result.json exists): not retraining it")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from timm_scaling import train

    if (num_processes or 1) > 1 and "WORLD_SIZE" not in os.environ:
        args = ["train", recipe, "--output", str(output), *(["--resume"] if resume else [])]
        args += [arg for text in overrides for arg in ("--set", text)]
        code = train.launch(args, num_processes)
        if code:
            raise typer.Exit(code)
        return
    try:
        train.train(resolved, output, resume=resume, num_processes=num_processes)
    except UserError as err:
        if os.environ.get("RANK", "0") != "0":  # the main process says it, once
            raise typer.Exit(err.exit_code) from None
        raise


@app.command("collect")
@user_errors
def collect_cmd(
    runs: Annotated[Path, typer.Argument(help="The --output folder of `timm-scaling train`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The CSV to write.")] = Path(
        "report.csv"
    ),
) -> None:
    """Rebuild a report.csv from the result.json of every finished run folder under RUNS."""
    from timm_scaling.runs import collect

    rows = collect(runs, output)
    typer.echo(f"{rows} run(s) from {runs} -> {output}")


@app.command("sweep")
@user_errors
def sweep_cmd(
    sweep: Annotated[
        str,
        typer.Argument(help="A built-in sweep (table7, figure8, matched, digits, demo) or a file."),
    ],
    seeds: Annotated[int, typer.Option(help="Runs per model, seeds 0..N-1.")] = 1,
    dataset: Annotated[
        str | None, typer.Option(help="cifar10, cifar100, digits, folder or synthetic.")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of every run.")] = None,
    shard: Annotated[
        str | None, typer.Option(help="K/N: train every N-th run from the K-th (K from 1).")
    ] = None,
    output: Annotated[Path, typer.Option(help="Run folders go here.")] = Path("runs"),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe key in every run.")
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Runs trained at once, each in its own process.")
    ] = 1,
    gpus: Annotated[
        str | None,
        typer.Option(help="Comma-separated GPU indices the jobs may use [default: all]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the runs and train nothing.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help=PLAN_HELP)] = False,
    plan_seconds: Annotated[float | None, typer.Option(help=PLAN_SECONDS_HELP)] = None,
) -> None:
    """Train every run of SWEEP not finished yet, then write OUTPUT/<sweep>/report.csv and its
    frontier (table, plot, verdict). An interrupted sweep resumes where it stopped.

    Many GPUs: one sweep process per GPU, each with its own --shard K/N and
    CUDA_VISIBLE_DEVICES=K-1, sharing --output; the last to finish writes the report."""
    import logging

    from tqdm import tqdm

    from timm_scaling import sweep as sweeps
    from timm_scaling.runs import finished, run_folder

    options = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs}
    overrides = [f"{k}={v}" for k, v in options.items() if v is not None] + list(set_ or [])
    # Checked before anything starts: a bad sweep, shard or override is one line.
    runs = sweeps.plan(sweeps.load_sweep(sweep), seeds, overrides, sweeps.parse_shard(shard))
    if gpus is not None:
        sweeps.select_gpus(gpus)
    # So is a run folder trained with other settings (finished() refuses it).
    states = ["finished" if finished(output, recipe) else "to train" for recipe in runs]
    if dry_run:
        for recipe, state in zip(runs, states, strict=True):
            typer.echo(f"{run_folder(output, recipe)}  {state}")
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if plan:
        from timm_scaling.plan import budget

        budget(False, plan_seconds)  # a bad --plan-seconds fails before any model is built
        started = time.perf_counter()
        with tqdm(total=len(runs), desc=f"{sweep} plan", unit="run", dynamic_ncols=True) as bar:

            def measured(i: int, total: int, recipe) -> None:
                bar.n = i
                bar.set_postfix_str(f"{recipe.model} s{recipe.seed}")
                bar.refresh()

            rows, path = sweeps.plan_sweep(
                sweep, seeds, overrides, shard, output, measured, jobs, gpus, plan_seconds
            )
            bar.n = len(runs)
        _show_plan(rows, path, time.perf_counter() - started, jobs)
        return
    bar = tqdm(total=len(runs), desc=sweep, unit="run", position=0, dynamic_ncols=True)

    def progress(i: int, total: int, recipe, done: bool) -> None:
        bar.n = i
        bar.set_postfix_str(f"{recipe.model} s{recipe.seed}{' (finished)' if done else ''}")

    try:
        result = sweeps.run_sweep(sweep, seeds, overrides, shard, output, progress, jobs, gpus)
        bar.n = len(runs)
        bar.refresh()
    finally:
        bar.close()
    typer.echo(f"trained {len(result.trained)} run(s), {len(result.skipped)} already finished")
    if result.report is None:
        typer.echo(
            f"{result.pending} run(s) of the sweep are not finished (other shards?): "
            f"run them, then this command again to write the report"
        )
        return
    from timm_scaling import frontier

    for warning in result.frontier.warnings:
        typer.echo(f"warning: {warning}", err=True)
    frontier.show(result.frontier, "table")
    typer.echo(f"report: {result.report}")
    for path in result.written:
        typer.echo(f"wrote {path}")


@app.command("search")
@user_errors
def search_cmd(
    dataset: Annotated[
        str | None, typer.Option(help="Proxy data set [default: the recipe's].")
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
) -> None:
    """Find compound coefficients alpha, beta, gamma at phi=1 (the paper's step 1)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from timm_scaling import search

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

    result = search.run_search(settings, on_run)
    headers, cells = search.table(result.rows)
    title = f"Compound coefficient search: {len(result.candidates)} candidates"
    table = Table(*headers, title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for row in cells:
        table.add_row(*row)
    Console().print(table)
    typer.echo(f"wrote {', '.join(str(path) for path in result.written)}")
    if result.chosen is None:
        typer.echo(
            f"{result.pending} run(s) pending on other shards: run each shard again once they "
            "finish"
        )
        return
    typer.echo(str(result.chosen))
    if register:
        typer.echo(f"registered: {' '.join(search.register_ladder(result.chosen))}")


def main() -> None:
    app(prog_name="timm-scaling")


if __name__ == "__main__":
    sys.exit(main())
