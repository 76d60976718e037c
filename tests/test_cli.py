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
