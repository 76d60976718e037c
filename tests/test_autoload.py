"""The start-up hook and the wheel, tested as users meet them: a plain (non-editable) install in
a fresh venv."""

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fresh_env(tmp_path_factory):
    """A new virtual environment with our wheel installed in it (not editable).

    torch and timm come from this interpreter's site-packages through a plain path entry, which
    does not run that directory's .pth files, so the editable install of the checkout stays out.
    """
    root = tmp_path_factory.mktemp("fresh")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
    )
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (wheel,) = wheels.glob("timm_scaling-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            purelib,
            str(wheel),
        ],
        check=True,
    )
    Path(purelib, "zz_host_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python, Path(purelib), root


def run(python, code, cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    environ.update(env)
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=environ
    )


def test_wheel_ships_the_hook_and_the_recipes(fresh_env):
    _, purelib, _ = fresh_env
    assert (purelib / "timm_scaling_autoload.pth").is_file()
    assert (purelib / "timm_scaling_autoload.py").is_file()
    assert (purelib / "timm_scaling" / "models.py").is_file()
    # the recipes inside the package, and nothing of ours at the top of site-packages that
    # another package could clash with (issue 32.11: a top-level recipes/ was installed)
    assert (purelib / "timm_scaling" / "recipes" / "fashion.yaml").is_file()
    assert (purelib / "timm_scaling" / "recipes" / "sweeps" / "fashion.yaml").is_file()
    assert (purelib / "timm_scaling" / "reference" / "speeds_h100_2026-11-26.csv").is_file()
    assert not (purelib / "recipes").exists()
    installed = {p.name for p in purelib.iterdir()} - {"bin", "__pycache__", "zz_host_packages.pth"}
    assert {name for name in installed if not name.startswith("timm_scaling")} == set()


def test_create_model_works_without_importing_our_package(fresh_env):
    python, purelib, root = fresh_env
    code = (
        "import sys, timm\n"
        "m = timm.create_model('effnet_b0_w2', num_classes=10)\n"
        "import timm_scaling\n"
        "print(m.num_classes, len(timm.list_models('effnet_b0*')), timm_scaling.__file__)"
    )
    out = run(python, code, cwd=root)
    assert out.returncode == 0, out.stderr
    num_classes, count, location = out.stdout.split()
    assert num_classes == "10" and int(count) >= 24
    assert Path(location).is_relative_to(purelib), "must import the installed wheel"


def test_interpreter_start_imports_neither_torch_nor_timm(fresh_env):
    python, _, root = fresh_env
    names = "('torch', 'timm', 'timm_scaling_autoload')"
    code = f"import sys; print(sorted(m for m in {names} if m in sys.modules))"
    out = run(python, code, cwd=root)
    assert out.stdout.strip() == "['timm_scaling_autoload']", out.stderr


def test_env_switch_turns_the_hook_off(fresh_env):
    python, _, root = fresh_env
    # Off: timm alone has none of our models, until an explicit import registers them.
    code = (
        "import timm; before = 'effnet_b0_w2' in timm.list_models()\n"
        "import timm_scaling; print(before, 'effnet_b0_w2' in timm.list_models())"
    )
    assert run(python, code, root, TIMM_SCALING_AUTOLOAD="0").stdout.split() == ["False", "True"]
    code = "import timm; print('effnet_b0_w2' in timm.list_models())"
    assert run(python, code, root, TIMM_SCALING_AUTOLOAD="1").stdout.strip() == "True"


def test_a_broken_plugin_never_breaks_python_or_timm(fresh_env, tmp_path):
    python, _, _ = fresh_env
    # A timm_scaling package earlier on the path whose models module raises on import.
    broken = tmp_path / "timm_scaling"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "models.py").write_text("raise ImportError('simulated breakage')\n")
    code = "import timm; print(timm.create_model('resnet18').num_classes)"
    out = run(python, code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1000"
    assert "could not register its models" in out.stderr and "simulated breakage" in out.stderr


@pytest.mark.slow
def test_profile_paper_runs_from_the_installed_wheel(fresh_env, tmp_path):
    """--paper reads the paper's tables from inside the installed package, not a checkout."""
    python, purelib, root = fresh_env
    assert (purelib / "timm_scaling" / "reference" / "README.md").is_file()
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ["TIMM_SCALING_CACHE"] = str(tmp_path / "cache")
    out = subprocess.run(
        [str(python), "-m", "timm_scaling", "profile", "--paper", "--json"],
        capture_output=True,
        text=True,
        cwd=root,
        env=environ,
    )
    assert out.returncode == 0, out.stderr
    tables = list(json.loads(out.stdout).values())
    assert [row["paper_model"] for row in tables[0]][::7] == ["efficientnet-b0", "efficientnet-b7"]
    compound = next(row for row in tables[1] if row["method"] == "compound")
    assert compound["model"] == "effnet_b0_phi2" and compound["paper_gmacs"] == 1.8
