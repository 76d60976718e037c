"""The command line: fast help, the variant table, one-line errors."""

import subprocess
import sys

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


def test_list_prints_every_variant_with_real_blocks():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for scaling in BUILTIN_SCALINGS:
        assert any(f" {scaling.name} " in line for line in lines), scaling.name
    phi1 = next(line for line in lines if " effnet_b0_phi1 " in line)
    # nominal 16 * 1.2 = 19.2 blocks; timm builds 23 (stages rounded up)
    assert "19.2" in phi1 and " 23 " in phi1


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
    assert message.startswith("error: --dataset cifar: dataset must be one of cifar10")
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
