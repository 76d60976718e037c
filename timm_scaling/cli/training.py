"""Commands that train: train, collect, sweep."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from timm_scaling.cli.base import (
    LOG_WITH_HELP,
    app,
    recipe_overrides,
    stop_code,
    stop_word,
    user_errors,
)
from timm_scaling.cli.planning import (
    PLAN_FROM_HELP,
    PLAN_HELP,
    PLAN_SECONDS,
    check_plan,
    measure_one,
    measure_sweep,
    project_runs,
)
from timm_scaling.errors import UserError


@app.command("train")
@user_errors
def train_cmd(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a recipe .yaml file.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="The model to train instead of the recipe's: ours (effnet_b0_w2) or any "
            "timm model (resnet18), built without weights."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help=(
                "cifar10, cifar100, digits, mnist, fashion_mnist, kmnist, synthetic; folder, "
                "tar, hfds/NAME... (timm's)."
            )
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
    plan_seconds: Annotated[float | None, PLAN_SECONDS] = None,
    plan_from: Annotated[str | None, typer.Option(help=PLAN_FROM_HELP)] = None,
) -> None:
    """Train RECIPE into OUTPUT/<recipe>-<model>-s<seed>/ and add its row to OUTPUT/report.csv."""

    from timm_scaling.outputs import check_output
    from timm_scaling.recipes import load_recipe
    from timm_scaling.runs import (
        check_folder,
        finished_result,
        latest_checkpoint,
        lock_run,
        resumes,
        run_folder,
    )

    options = {"model": model, "dataset": dataset, "data_dir": data_dir, "epochs": epochs}
    options.update(batch_size=batch_size, lr=lr, seed=seed, log_with=log_with)
    overrides = recipe_overrides(options, set_)
    resolved = load_recipe(recipe, overrides)
    check_output(output)
    if num_processes:  # before any process starts
        resolved.check_processes(num_processes)
    if "WORLD_SIZE" not in os.environ:  # a typo: one line before a process or a model starts
        from timm_scaling.catalog import resolve_model

        resolve_model(resolved.model)
    if plan or plan_from:
        check_plan(plan_from, resume, num_processes)
        if plan_from:
            project_runs([resolved], plan_from, output)
        else:
            measure_one(resolved, output, plan_seconds)
        return
    launcher = "WORLD_SIZE" not in os.environ  # not a worker that `accelerate launch` started
    folder = run_folder(output, resolved)
    with lock_run(folder) if launcher else contextlib.nullcontext():
        if finished_result(output, resolved, resume, typer.echo, put_back=launcher) is not None:
            return
        resume = resumes(folder, resume)
        # Before any process starts or any model is built: the run folder, and the data.
        check_folder(folder, resolved, resume)
        if resume and latest_checkpoint(folder) is None:
            typer.echo(
                f"--resume: {folder} has no finished epoch to resume; training it from epoch 1",
                err=True,
            )
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
            if code:  # the workers said why above; a killed one (-9) said nothing
                typer.echo(
                    f"error: the {num_processes} training processes ended with exit code {code} "
                    "(why is above; a process killed by signal 9 most often ran out of memory): "
                    f"{interrupted(output, resolved)}",
                    err=True,
                )
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
        typer.Option("--output", "-o", help="The CSV to write.", show_default="RUNS/report.csv"),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="Drop the report's rows whose run folders are not under RUNS."),
    ] = False,
) -> None:
    """Rebuild a report.csv from the result.json of every finished run folder under RUNS.

    One row per run folder. Rows of runs not under RUNS (deleted folders) go only with --prune."""
    from timm_scaling.collecting import collect
    from timm_scaling.runs import REPORT_FILE

    output = output or runs / REPORT_FILE
    rows = collect(runs, output, prune=prune)
    typer.echo(f"{rows} run(s) from {runs} -> {output}")


@app.command("sweep")
@user_errors
def sweep_cmd(
    sweep: Annotated[
        str,
        typer.Argument(
            help="A built-in sweep (demo, digits, fashion, fashion-full, figure8, matched, "
            "resnet, table7) or a file."
        ),
    ],
    seeds: Annotated[
        int | None,
        typer.Option(
            help="Runs per model, seeds 0..N-1.", show_default="the sweep file's seeds, else 1"
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help=(
                "cifar10, cifar100, digits, mnist, fashion_mnist, kmnist, synthetic; folder, "
                "tar, hfds/NAME... (timm's)."
            )
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
        str,
        typer.Option(
            help="Runs trained at once, each in its own process; auto: the count the sweep's "
            "plan (--plan --jobs K for a few K) measured fastest."
        ),
    ] = "1",
    gpus: Annotated[
        str | None,
        typer.Option(help="Comma-separated GPU indices the jobs may use.", show_default="all"),
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
    plan_seconds: Annotated[float | None, PLAN_SECONDS] = None,
    plan_from: Annotated[str | None, typer.Option(help=PLAN_FROM_HELP)] = None,
    fuse_seeds: Annotated[
        bool,
        typer.Option(
            help="Train the --seeds of each model in one process as one vmapped step (each "
            "still its own run folder and row)."
        ),
    ] = False,
    mps: Annotated[
        bool,
        typer.Option(
            "--mps",
            help="Jobs that share a GPU run at once under NVIDIA's MPS (a daemon of the "
            "sweep's own, where none runs).",
        ),
    ] = False,
) -> None:
    """Train every run of SWEEP not finished yet, then write its report and frontier.

    The report is OUTPUT/<sweep>/report.csv, the frontier its table, plot and verdict. An
    interrupted sweep resumes where it stopped.

    Many GPUs: one sweep process per GPU, each with its own --shard K/N and
    CUDA_VISIBLE_DEVICES=K-1, sharing --output; the last to finish writes the report."""
    import logging

    from tqdm import tqdm

    from timm_scaling import sweep as sweeps
    from timm_scaling import sweep_file
    from timm_scaling.outputs import check_output
    from timm_scaling.packing import AUTO
    from timm_scaling.runs import finished, run_folder, run_state
    from timm_scaling.workers import select_gpus

    options = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs, "log_with": log_with}
    overrides = recipe_overrides(options, set_)
    check_output(output)
    jobs = sweeps.check_jobs(jobs, plan or bool(plan_from))
    # Checked before anything starts: a bad sweep, shard or override is one line.
    spec = sweep_file.load_sweep(sweep)
    seeds = spec.seeds if seeds is None else seeds  # resolved once: plan and fuse say it
    runs = sweep_file.plan(spec, seeds, overrides, sweep_file.parse_shard(shard), fuse_seeds)
    if dry_run:
        sweeps.check_names(runs)  # a typo is an error, not a run "to train"
        for recipe in runs:
            typer.echo(f"{run_folder(output, recipe)}  {run_state(output, recipe)}")
        if jobs == AUTO:
            todo = [recipe for recipe in runs if finished(output, recipe) is None]
            typer.echo(sweeps.auto_jobs(spec, todo, output, gpus, fuse_seeds, mps).why)
        return
    if fuse_seeds and (plan or plan_from):
        raise UserError("--plan measures each run alone; plan without --fuse-seeds")
    if plan_from:
        project_runs(runs, plan_from, sweeps.plan_path(output, spec).parent, jobs)
        return
    if gpus is not None:
        select_gpus(gpus)
    if fuse_seeds:
        from timm_scaling.seed_groups import check_fusable

        for recipe in runs:
            check_fusable(recipe)
        if seeds == 1:
            typer.echo("--fuse-seeds with --seeds 1: one seed a model, nothing to fuse", err=True)
    # So is a run folder trained with other settings (finished() refuses it).
    states = ["finished" if finished(output, recipe) else "to train" for recipe in runs]
    # Off a terminal (CI, SLURM, a file): no bars, but log lines, a file holds them.
    terminal = sys.stderr.isatty()
    quiet = terminal or plan  # a plan's runs are set up, not trained: their lines are noise
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    if plan:
        measure_sweep(
            sweep,
            spec,
            runs,
            seeds=seeds,
            overrides=overrides,
            shard=shard,
            output=output,
            jobs=jobs,
            gpus=gpus,
            mps=mps,
            seconds=plan_seconds,
        )
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
            sweep, seeds, overrides, shard, output, progress, jobs, gpus, landed, fuse_seeds, mps
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
