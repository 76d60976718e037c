"""The command line: fast help, the variant table, one-line errors."""

import csv
import io
import json
import math
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from timm_scaling.cli import app
from timm_scaling.models import BUILTIN_SCALINGS

runner = CliRunner()


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from timm_scaling.cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='timm-scaling')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'calflops', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "list" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_help_texts_survive_rich_markup():
    """The command list shows each command's first paragraph as it is, so it must be one line
    (a line break there broke the list mid-sentence); rich reads ``[...]`` in any help as
    markup and drops it (``[default: all]`` printed as nothing), so a default no value shows
    goes in ``show_default``."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert "\n" not in command.help.split("\n\n")[0], name
        for param in command.params:
            assert "[" not in (getattr(param, "help", None) or ""), (name, param.name)
    sweep_help = runner.invoke(app, ["sweep", "--help"]).output.replace("│", " ")
    assert "the jobs may use. [default: (all)]" in " ".join(sweep_help.split())


@pytest.mark.slow
def test_list_fits_80_columns_and_gives_every_column_as_csv_and_json(tmp_path, monkeypatch):
    from timm_scaling import models

    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path))
    command = [sys.executable, "-m", "timm_scaling", "list"]  # its stdout a pipe
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    lines = output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in output
    assert lines[0].split() == ["model", "method", "depth", "width", "resolution", "input",
                                "params_m", "blocks"]  # fmt: skip
    builtins = [s.name for s in BUILTIN_SCALINGS]  # first; then any registered since
    assert [line.split()[0] for line in lines[1 : 1 + len(builtins)]] == builtins
    phi1 = next(line.split() for line in lines if line.startswith("effnet_b0_phi1 "))
    assert phi1[-1] == "23"  # timm's rounded-up stages, not the nominal 16 * 1.2 = 19.2
    b0 = models.architecture("effnet_b0").param_count
    assert lines[1].split()[-2] == f"{b0 / 1e6:.2f}"

    # Every column, from the cache now: no model is built. The variants are those the fresh
    # process listed (earlier tests in this process may have registered more, never cached).
    listed = [line.split()[0] for line in lines[1:]]
    monkeypatch.setattr(models, "_registered", {name: models.scaling_of(name) for name in listed})
    monkeypatch.setattr(models, "architecture", None)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["list", "--csv"]).output)))
    phi1 = next(row for row in rows if row["model"] == "effnet_b0_phi1")
    assert phi1["nominal_blocks"] == "19.2" and phi1["per_stage"].split() == [
        str(math.ceil(blocks * 1.2))
        for blocks in (1, 2, 2, 3, 3, 4, 1)  # B0's stages, d=1.2
    ]
    assert json.loads(runner.invoke(app, ["list", "--json"]).output) == [
        {
            **row,
            **{
                k: json.loads(v)
                for k, v in row.items()
                if k not in ("model", "method", "per_stage")
            },
        }
        for row in rows
    ]


def test_version():
    from timm_scaling import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"timm-scaling {__version__}\n"


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    return result.output


def test_errors_quote_what_was_typed(tmp_path):
    out = ["--output", str(tmp_path)]
    message = one_line_error(["train", "digits", "--dataset", "cifar", *out])
    assert message.startswith(
        "error: --dataset cifar: unknown dataset 'cifar'; choose one of cifar10"
    )
    message = one_line_error(["train", "digits", "--epochs", "0", *out])
    assert message == "error: --epochs 0: epochs must be 1 or more, got 0\n"
    message = one_line_error(["sweep", "demo", "--epochs", "-1", *out])
    assert message == "error: --epochs -1: epochs must be 1 or more, got -1\n"
    message = one_line_error(["train", "digits", "--set", "lr=0", *out])
    assert message == "error: --set lr=0: lr must be above 0, got 0.0\n"
    message = one_line_error(["train", "digits", "--set", "grad_accum=3", *out])
    assert message.startswith("error: digits --set grad_accum=3: batch_size must be a multiple")


def test_bad_batch_split_and_output_file_are_caught_before_training(tmp_path):
    message = one_line_error(
        ["train", "digits", "--batch-size", "33", "--num-processes", "2", "--output", str(tmp_path)]
    )
    assert message == (
        "error: batch_size 33 does not split over 2 processes; --batch-size a multiple of 2\n"
    )
    afile = tmp_path / "afile"
    afile.write_text("")
    for command in ("train", "sweep"):
        message = one_line_error([command, "digits", "--output", str(afile)])
        assert message == (
            f"error: --output {afile} is a file: pass a folder (it holds the run folders and "
            "report.csv)\n"
        )


def test_a_run_folder_that_cannot_be_trained_into_is_refused_before_any_process(
    tmp_path, monkeypatch
):
    from timm_scaling import train
    from timm_scaling.recipes import load_recipe
    from timm_scaling.runs import CHECKPOINTS, LATEST, RECIPE_FILE, STATE_FILE

    def started(*args, **kwargs):
        raise AssertionError("a run started for a folder it may not train into")

    monkeypatch.setattr(train, "train", started)
    monkeypatch.setattr(train, "launch", started)
    folder = tmp_path / "digits-effnet_b0-s0"
    (folder / CHECKPOINTS / "epoch-0001").mkdir(parents=True)
    (folder / CHECKPOINTS / "epoch-0001" / STATE_FILE).write_text('{"epoch": 1, "history": []}')
    (folder / CHECKPOINTS / LATEST).write_text("epoch-0001\n")
    load_recipe("digits").write(folder / RECIPE_FILE)
    out = ["--output", str(tmp_path)]
    message = one_line_error(["train", "digits", *out, "--num-processes", "2"])
    assert f"{folder} holds an unfinished run (checkpoint epoch-0001); pass --resume" in message
    message = one_line_error(["train", "digits", *out, "--resume", "--set", "lr_base=0.001"])
    assert f"--resume: the recipe differs from {folder / RECIPE_FILE} in lr;" in message


def test_launched_processes_that_fail_end_in_what_the_folder_keeps(tmp_path, monkeypatch):
    """`train --num-processes 2` whose workers end badly (one killed by the out-of-memory
    killer: the other's gloo connection resets, and the launcher exits 1): the last line says
    what the run folder keeps and how to go on, with the launcher's exit code."""
    from timm_scaling import train
    from timm_scaling.runs import CHECKPOINTS, LATEST, STATE_FILE

    folder = tmp_path / "digits-effnet_b0-s0"

    def an_epoch_then_killed(args, num_processes):
        (folder / CHECKPOINTS / "epoch-0001").mkdir(parents=True)
        (folder / CHECKPOINTS / "epoch-0001" / STATE_FILE).write_text('{"epoch": 1, "history": []}')
        (folder / CHECKPOINTS / LATEST).write_text("epoch-0001\n")
        return 1

    monkeypatch.setattr(train, "launch", an_epoch_then_killed)
    outcome = runner.invoke(
        app, ["train", "digits", "--output", str(tmp_path), "--num-processes", "2"]
    )
    assert outcome.exit_code == 1
    assert outcome.stderr.splitlines()[-1] == (
        "error: the 2 training processes ended with exit code 1 (why is above; a process killed "
        f"by signal 9 most often ran out of memory): {folder} keeps its last finished epoch (1); "
        "run the same command with --resume to continue it"
    )


@pytest.mark.parametrize(
    ("stop", "code", "word"),
    [
        ("KeyboardInterrupt", 130, "interrupted"),
        ("Terminated", 143, "terminated"),
        ("HungUp", 129, "hung up"),
    ],
)
def test_a_stopped_command_says_so_with_its_signals_code(monkeypatch, stop, code, word):
    """A command with nothing half-done to report (profile) still ends as train and sweep do:
    its word on stderr, 130 for Ctrl-C, 143 for SIGTERM (it was 130 for both), 129 for SIGHUP."""
    from timm_scaling import cli, profile

    def stopped(*args, **kwargs):
        raise getattr(cli, stop, KeyboardInterrupt)

    monkeypatch.setattr(profile, "profile_rows", stopped)
    outcome = runner.invoke(app, ["profile", "effnet_b0", "--no-speed"])
    assert (outcome.exit_code, outcome.output) == (code, f"{word}\n")


@pytest.mark.parametrize("nohup", [False, True])
def test_sigterm_and_sighup_stop_a_command_as_ctrl_c_does_unless_sighup_is_ignored(
    monkeypatch, nohup
):
    """While a command runs, SIGTERM and SIGHUP (a closed terminal) raise what Ctrl-C raises, so
    that it stops as Ctrl-C stops it (its jobs, MPS daemon and lock let go); under ``nohup``
    (SIGHUP ignored) SIGHUP stays ignored. Both are given back when the command ends."""
    from timm_scaling import cli

    signals = (signal.SIGTERM, signal.SIGHUP)
    during = {}
    monkeypatch.setattr(cli, "app", lambda **kwargs: during.update(handlers(signals)))
    before = handlers(signals)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN if nohup else signal.SIG_DFL)
        cli.main()
        after = handlers(signals)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    with pytest.raises(cli.Terminated) as stop:
        during[signal.SIGTERM](signal.SIGTERM, None)
    assert type(stop.value) is cli.Terminated
    if nohup:
        assert during[signal.SIGHUP] == after[signal.SIGHUP] == signal.SIG_IGN
    else:
        with pytest.raises(cli.HungUp):
            during[signal.SIGHUP](signal.SIGHUP, None)
        assert after[signal.SIGHUP] == signal.SIG_DFL
    assert after[signal.SIGTERM] == signal.SIG_DFL


def handlers(signals) -> dict:
    return {signum: signal.getsignal(signum) for signum in signals}


def test_a_model_where_a_recipe_goes_says_how_to_train_it(tmp_path):
    out = ["--output", str(tmp_path)]
    message = one_line_error(["train", "effnet_b0_w2", *out])
    assert message.startswith("error: unknown recipe 'effnet_b0_w2'")
    assert message.endswith(
        "; effnet_b0_w2 is a model: train it with a recipe, e.g. timm-scaling train baseline "
        "--model effnet_b0_w2 (or --set model=effnet_b0_w2)\n"
    )
    message = one_line_error(["train", "resnet18", *out])
    assert message.endswith(
        "; a model? name it with --model (timm-scaling train baseline --model resnet18)\n"
    )
    assert "a model?" not in one_line_error(["train", "nowhere/x.yaml", *out])


def test_train_model_sets_the_recipes_model(tmp_path):
    """--model reaches the recipe's model key: a typo in it is the model's own error, quoted
    as typed; nothing trains."""
    message = one_line_error(
        ["train", "digits", "--model", "effnet_b0_dd2", "--output", str(tmp_path)]
    )
    assert message.startswith("error: --model effnet_b0_dd2: model: 'effnet_b0_dd2' is not")
    assert not list(tmp_path.iterdir())
