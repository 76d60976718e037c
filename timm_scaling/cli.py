"""The ``timm-scaling`` command: parse, call one function, print.

Heavy imports (torch, timm, calflops) happen inside the commands that need them, so
``timm-scaling --help`` and ``timm-scaling frontier`` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
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


def _print_version(value: bool) -> None:
    if value:
        from timm_scaling import __version__

        typer.echo(f"timm-scaling {__version__}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
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
        except BrokenPipeError:  # `timm-scaling ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except OSError as err:  # a full disk, a read-only folder, a name too long, ...
            typer.echo(f"error: {os_error(err)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def os_error(err: OSError) -> str:
    """An error of the file system as one line: what failed, on which file, and what to do."""
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    return (
        f"{where + ': ' if where else ''}{err.strerror or err}: free space, or pick a path you "
        "can write to, then run the same command again"
    )


LOG_WITH_HELP = (
    "Experiment trackers (Accelerate's names, comma separated): tensorboard, wandb, mlflow, "
    "comet_ml, aim, clearml or all; they log into each run folder."
)


def recipe_overrides(options: dict[str, object], set_: list[str] | None) -> list[str]:
    """A command's recipe options (``--epochs 3``) and ``--set`` texts as recipe overrides; an
    error about one quotes it as it was typed."""
    from timm_scaling.recipes import Override

    return [
        Override(f"{key}={value}", f"--{key.replace('_', '-')} {value}")
        for key, value in options.items()
        if value is not None
    ] + list(set_ or [])


LIST_COLUMNS = ("model", "method", "depth", "width", "resolution", "input", "params_m", "blocks")


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
def list_cmd(
    as_csv: Annotated[bool, typer.Option("--csv", help="Every column, as CSV.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Every column, as JSON.")] = False,
) -> None:
    """Every registered variant: multipliers, input size, params (M), real blocks. --csv and
    --json add the blocks per stage, the nominal blocks and the nominal FLOP factor."""
    import csv
    import io
    import json

    from timm_scaling.models import variant_table

    if as_csv and as_json:
        raise UserError("--csv and --json: pick one")
    rows = variant_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    elif as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(buffer.getvalue(), nl=False)
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
            help="The group every other group is compared with.  [default: compound]",
            show_default=False,
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
    """Accuracy against cost per scaling method or model family: Pareto front, fits, verdict,
    plot.

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
    from timm_scaling.report import atomic_write
    from timm_scaling.tables import print_table

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

        kwargs = dict(parse_override(Override(t, "--model-kwarg")) for t in model_kwarg or ())
        rows = profile.profile_rows(
            models, base_size, num_classes, batch_size, device, speed, kwargs
        )
        tables = {"Cost (MACs: multiply-accumulates; FLOPs: calflops' count)": rows}
    else:
        raise UserError("name at least one model (or a glob), or pass --paper or --match-gmacs")
    if csv_path and not paper:
        atomic_write(csv_path, profile.to_csv(rows))
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


@app.command("train")
@user_errors
def train_cmd(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a recipe .yaml file.")],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="cifar10, cifar100, digits, synthetic; folder, tar, hfds/NAME... (timm's)."
        ),
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per update, over all processes.")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate as given (else the recipe's lr_base, scaled to the batch)."
        ),
    ] = None,
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
    log_with: Annotated[str | None, typer.Option(help=LOG_WITH_HELP)] = None,
    plan: Annotated[bool, typer.Option("--plan", help=PLAN_HELP)] = False,
    plan_seconds: Annotated[float | None, typer.Option(help=PLAN_SECONDS_HELP)] = None,
) -> None:
    """Train RECIPE into OUTPUT/<recipe>-<model>-s<seed>/ and add its row to OUTPUT/report.csv."""
    import logging

    from timm_scaling.recipes import load_recipe
    from timm_scaling.runs import (
        REPORT_FILE,
        check_folder,
        check_output,
        ensure_row,
        finished,
        lock_run,
        run_folder,
    )

    options = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs}
    options.update(batch_size=batch_size, lr=lr, seed=seed, log_with=log_with)
    overrides = recipe_overrides(options, set_)
    resolved = load_recipe(recipe, overrides)
    check_output(output)
    if num_processes:  # before any process starts
        resolved.check_processes(num_processes)
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
    launcher = "WORLD_SIZE" not in os.environ  # not a worker that `accelerate launch` started
    folder = run_folder(output, resolved)
    with lock_run(folder) if launcher else contextlib.nullcontext():
        done = finished(output, resolved, resume)
        if done is not None:
            typer.echo(f"{done} is finished (its result.json exists): not retraining it")
            if launcher and ensure_row(done, output):
                typer.echo(f"its row was missing from {output / REPORT_FILE}: put back")
            return
        # Before any process starts or any model is built: the run folder, and the data.
        check_folder(folder, resolved, resume)
        if not resolved.in_memory:
            from timm_scaling import pipeline

            pipeline.require(resolved.dataset, resolved.data_dir)
        _train(resolved, recipe, output, resume, num_processes, overrides, launcher)


def _train(resolved, recipe: str, output: Path, resume: bool, num_processes, overrides, launcher):
    """Train in this process, or launch ``num_processes`` workers; Ctrl-C and SIGTERM say what
    the run folder keeps and how to go on."""
    import logging

    from timm_scaling.runs import interrupted

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from timm_scaling import train

    try:
        if (num_processes or 1) > 1 and launcher:
            args = ["train", recipe, "--output", str(output), *(["--resume"] if resume else [])]
            args += [arg for text in overrides for arg in ("--set", text)]
            code = train.launch(args, num_processes)
            if code:
                raise typer.Exit(code)
            return
        train.train(resolved, output, resume=resume, num_processes=num_processes)
    except UserError as err:
        if os.environ.get("RANK", "0") != "0":  # the main process says it, once
            raise typer.Exit(err.exit_code) from None
        raise
    except KeyboardInterrupt as stop:
        if launcher:
            typer.echo(f"{stop_word(stop)}: {interrupted(output, resolved)}", err=True)
        raise typer.Exit(stop_code(stop)) from None


@app.command("collect")
@user_errors
def collect_cmd(
    runs: Annotated[Path, typer.Argument(help="The --output folder of `timm-scaling train`.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The CSV to write [default: RUNS/report.csv]."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="Drop the report's rows whose run folders are not under RUNS."),
    ] = False,
) -> None:
    """Rebuild a report.csv from the result.json of every finished run folder under RUNS: one
    row per run folder. Rows of runs not under RUNS (deleted folders) go only with --prune."""
    from timm_scaling.runs import REPORT_FILE, collect

    output = output or runs / REPORT_FILE
    rows = collect(runs, output, prune=prune)
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
        str | None,
        typer.Option(
            help="cifar10, cifar100, digits, synthetic; folder, tar, hfds/NAME... (timm's)."
        ),
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
    dry_run: Annotated[
        bool,
        typer.Option(
            help="List every run with its state (finished, resumable from epoch K, to train, "
            "conflicting) and train nothing."
        ),
    ] = False,
    log_with: Annotated[str | None, typer.Option(help=LOG_WITH_HELP)] = None,
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
    from timm_scaling.runs import check_output, finished, run_folder, run_state

    options = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs, "log_with": log_with}
    overrides = recipe_overrides(options, set_)
    check_output(output)
    # Checked before anything starts: a bad sweep, shard or override is one line.
    runs = sweeps.plan(sweeps.load_sweep(sweep), seeds, overrides, sweeps.parse_shard(shard))
    if dry_run:
        for recipe in runs:
            typer.echo(f"{run_folder(output, recipe)}  {run_state(output, recipe)}")
        return
    if gpus is not None:
        sweeps.select_gpus(gpus)
    # So is a run folder trained with other settings (finished() refuses it).
    states = ["finished" if finished(output, recipe) else "to train" for recipe in runs]
    # Off a terminal (CI, SLURM, a file): no bars, but log lines, a file holds them.
    terminal = sys.stderr.isatty()
    quiet = terminal or plan  # a plan's runs are set up, not trained: their lines are noise
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    if plan:
        from timm_scaling.plan import budget

        budget(False, plan_seconds)  # a bad --plan-seconds fails before any model is built
        started = time.perf_counter()
        with tqdm(
            total=len(runs),
            desc=f"{sweep} plan",
            unit="run",
            dynamic_ncols=True,
            disable=not terminal,
        ) as bar:

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
    bar = tqdm(
        total=len(runs),
        desc=sweep,
        unit="run",
        position=0,
        dynamic_ncols=True,
        disable=not terminal,
    )

    def progress(i: int, total: int, recipe, state: str) -> None:
        bar.n = i
        bar.set_postfix_str(f"{recipe.model} s{recipe.seed} ({state})")
        if not terminal:
            line = f"{sweep}: {i}/{total} done; {recipe.model} s{recipe.seed} {state}"
            typer.echo(line, err=True)

    def landed(recipe, result: dict) -> None:
        bar.write(f"{run_folder(output, recipe)}: top1 {result['top1']:.2f}")

    try:
        result = sweeps.run_sweep(
            sweep, seeds, overrides, shard, output, progress, jobs, gpus, landed
        )
        bar.n = len(runs)
        bar.refresh()
    except KeyboardInterrupt as stop:
        bar.close()
        now = [finished(output, recipe) is not None for recipe in runs]
        newly = sum(done and state != "finished" for done, state in zip(now, states, strict=True))
        typer.echo(
            f"{stop_word(stop)}: trained {newly} run(s), {now.count(False)} not finished (each "
            "resumes from its last finished epoch); run the same command again to resume",
            err=True,
        )
        raise typer.Exit(stop_code(stop)) from None
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
    # One rule for both commands: intervals from evaluation noise need --eval-size, which the
    # sweep takes from its runs (every run is evaluated on the same split).
    size = result.frontier.eval_size
    typer.echo(
        f"this table again: timm-scaling frontier {result.report}"
        + f" --eval-size {size}" * bool(size)
    )
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
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan (candidates, proxy runs, time) and train nothing.")
    ] = False,
) -> None:
    """Find compound coefficients alpha, beta, gamma at phi=1 (the paper's step 1).

    Prints the plan first: candidates, proxy runs per rung and the projected time."""
    from rich import box
    from rich.table import Table

    from timm_scaling import search
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

    plan = search.plan(settings)
    for line in search.describe_plan(settings, plan):
        typer.echo(line)
    if dry_run:
        return
    result = search.run_search(settings, on_run, plan.candidates)
    headers, cells = search.table(result.rows)
    title = f"Compound coefficient search: {len(result.candidates)} candidates"
    table = Table(*headers, title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for row in cells:
        table.add_row(*row)
    print_table(table)
    typer.echo(f"wrote {', '.join(str(path) for path in result.written)}")
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, what SLURM and Kubernetes send before a kill: handled as Ctrl-C is (the run
    folder keeps its last finished epoch, a sweep stops its jobs, the message says how to go
    on), with exit code 143."""


def _terminate(signum: int, frame) -> None:
    raise Terminated


def stop_word(stop: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(stop, Terminated) else "interrupted"


def stop_code(stop: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="timm-scaling")


if __name__ == "__main__":
    sys.exit(main())
