"""benchmarks/gpu_check.py, run on the CPU so that it does not rot before the next GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True
    )


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a Python that imports torch
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    done = gpu_check("--device", "cuda", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no CUDA GPU is visible" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quick_cpu_run_writes_both_files_with_every_kind_of_step(tmp_path):
    """Every kind of step, at smoke-run sizes (c3 plans another sweep as c1 does, so it is left
    out: --steps); the budget is raised so that a slow machine cuts none."""
    out = tmp_path / "check"
    args = ["--device", "cpu", "--quick", "--out", str(out), "--budget", "1200"]
    done = gpu_check(*args, "--steps", "a,b1,c1,d")
    record = json.loads((out / "gpu_check.json").read_text())
    steps = record["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {
        **dict.fromkeys(("a", "b1", "c1", "d"), "ok"),
        **dict.fromkeys(("b2", "b3", "b4", "c5", "c3", "e"), "not run: not in --steps"),
    }, done.stdout + done.stderr
    assert done.returncode == 0
    env = record["environment"]
    assert env["versions"]["torch"] and env["versions"]["timm"] and env["missing"] == []
    assert steps["a"]["counts"]["skipped"] >= 7  # no GPU: every cuda test skipped, none failed
    assert steps["b1"]["loop"] > 0 and steps["b1"]["limit"] > 0 and steps["b1"]["plain"] > 0
    table7 = steps["c1"]
    assert table7["runs"] == 1 and table7["rows"][0]["model"] == "effnet_b0"
    assert table7["study_s"] == pytest.approx(3 * table7["rows"][0]["run_s"])
    assert [run["model"] for run in steps["d"]["runs"]] == ["effnet_b0", "effnet_b0_w2p17"]
    text = (out / "gpu_check.md").read_text()
    first = text.splitlines()[:4]
    assert first[0].startswith("# GPU check: ") and "torch " in first[3] and "timm " in first[3]
    assert "The Table 7 study (1 recipes x 3 seeds" in text


def test_steps_runs_only_the_steps_named(tmp_path, monkeypatch, capsys):
    """What a short lease still needs: the others are recorded as not asked for, not failed."""
    script = load_script()
    monkeypatch.setattr(script.signal, "signal", lambda *args: None)  # pytest keeps its SIGTERM
    ran = []
    for fn in ("tests", "throughput", "fused", "plan", "demo", "packing"):
        monkeypatch.setattr(script, fn, lambda check, limit, *args, fn=fn: ran.append(fn))
    out = tmp_path / "out"
    assert script.main(["--device", "cpu", "--quick", "--out", str(out), "--steps", "d,c1"]) == 0
    assert ran == ["plan", "demo"]  # c1 then d: the script's order, not the option's
    steps = json.loads((out / "gpu_check.json").read_text())["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {
        **dict.fromkeys(("a", "b1", "b2", "b3", "b4", "c5", "c3", "e"), "not run: not in --steps"),
        "c1": "ok",
        "d": "ok",
    }
    # Asked for on a CPU, the GPU-only steps say so (and fail nothing).
    ran.clear()
    assert script.main(["--device", "cpu", "--quick", "--out", str(out), "--steps", "b2,e"]) == 0
    steps = json.loads((out / "gpu_check.json").read_text())["steps"]
    assert (
        ran == [] and steps["b2"]["status"] == steps["e"]["status"] == "not run: needs a CUDA GPU"
    )
    capsys.readouterr()
    assert script.main(["--device", "cpu", "--out", str(out), "--steps", "a,z9"]) == 2
    err = capsys.readouterr().err
    choose = "a, b1, b2, b3, b4, c1, c2, c5, d, c3, e, c4"
    assert err == f"error: --steps a,z9: no step z9; choose from {choose}\n"


def test_a_relative_out_is_where_it_was_given_not_in_the_checkout(tmp_path, monkeypatch):
    """The steps' commands run in the checkout: a relative --out given elsewhere (as in
    `python3 ~/timm-scaling/benchmarks/gpu_check.py --out gpu-check`) must reach them as the
    folder it names there, or their files land in the checkout and the step fails."""
    script = load_script()
    monkeypatch.setattr(script.signal, "signal", lambda *args: None)  # pytest keeps its SIGTERM
    given = []
    monkeypatch.setattr(script, "demo", lambda check, limit: given.append(check))
    monkeypatch.delenv("TIMM_SCALING_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert script.main(["--device", "cpu", "--quick", "--out", "rel", "--steps", "d"]) == 0
    assert [(c.out, c.logs, c.env["TIMM_SCALING_CACHE"]) for c in given] == [
        (tmp_path / "rel", tmp_path / "rel" / "logs", str(tmp_path / "rel" / "cache"))
    ]
    assert (tmp_path / "rel" / "gpu_check.json").is_file()


def test_report_renders_every_section():
    """The Markdown of a full GPU record (the numbers are made up; the layout is checked)."""
    script = load_script()
    loop = {"model": "effnet_b0", "img_size": 32, "batch_size": 128, "mixed_precision": "bf16"}
    loop |= {"compile_mode": None, "optimizer_step": "foreach", "warm_up_s": 9.0}
    loop |= {"limit": 1000.0, "loop": 950.0, "plain": 400.0}
    loop |= {"loop_over_limit": 0.95, "loop_over_plain": 2.375}
    row = {"model": "effnet_b0", "img_size": 32.0, "batch_size": 128.0, "micro_batches": 1.0}
    row |= {"images_per_s": 9000.0, "peak_mem_mb": 700.0, "epoch_s": 6.0, "run_s": 210.0}
    plan = {"rows": [row], "runs": 1, "printed": ["total: 1 run(s)"], "study_s": 630.0}
    packing = {"model": "effnet_b0", "batch_size": 128, "alone_images_per_s": 900.0}
    packing |= {"packed_images_per_s": [500.0] * 4, "packed_total_images_per_s": 2000.0}
    packing |= {"speedup": 2000 / 900, "overlap": 0.93}
    packing["mps"] = {"packed_images_per_s": [800.0] * 4, "packed_total_images_per_s": 3200.0}
    packing["mps"] |= {"speedup": 3200 / 900, "overlap": 0.9}
    fused = {"model": "effnet_b0", "image_size": 32, "seeds": 3, "batch_size": 128}
    fused |= {"separate": 1500.0, "fused": 3300.0, "fused/separate": 2.2}
    fused |= {"fused_per_seed": 3000.0, "fused_per_seed/separate": 2.0}
    demo = {"wall_s": 80.0, "runs": [{"model": "effnet_b0", "img_size": 32, "top1": 60.5}]}
    demo["runs"][0] |= {"top5": 95.0, "train_time_s": 9.5, "peak_mem_mb": 180.0, "device": "H"}
    case = {"test": "test_cuda::test_x", "outcome": "passed", "seconds": 1.5, "message": ""}
    steps = {
        "a": {"tests": [case], "counts": {"passed": 1}},
        "b1": loop,
        "b3": fused,
        "b4": loop
        | {"cuda_graph": True, "loop": 3500.0, "loop_over_limit": 3.5, "loop_over_plain": 8.75},
        "c1": plan,
        "d": demo,
        "e": packing,
    }
    for name, step in steps.items():
        step |= {"title": f"step {name}", "status": "ok", "seconds": 10.0}
    record = {"started": "now", "updated": "later", "command": "gpu_check.py", "device": "cuda"}
    record |= {"quick": False, "budget_s": 450.0, "steps": steps}
    record["environment"] = {"device_name": "NVIDIA H100", "versions": {"torch": "2.11"}}
    text = script.render(record)
    assert text.startswith("# GPU check: NVIDIA H100\n")
    for expected in (
        "| a: step a | ok | 10 |",
        "| test_cuda::test_x | passed | 1.5 |  |",
        "loop/limit **0.95**, loop/plain **2.38** (goals: loop/limit >= 0.9, loop/plain >= 2)",
        "cuda_graph on, optimizer step foreach",
        "loop/limit **3.50**, loop/plain **8.75** (goal: loop/limit >= 3)",
        "| effnet_b0 | 32 | 128 | 1 | 9000 | 700 | 6.0 s | 3.5 min |",
        "**The Table 7 study (1 recipes x 3 seeds, their epochs): 10.5 min**",
        "| effnet_b0 | 32 | 60.5 | 95.0 | 9.5 | 180 |",
        "separate 1500 images/s, fused 3300: fused/separate **2.20** (goal: >= 2)",
        "as `sweep --fuse-seeds` steps (each seed's optimizer): 3000 images/s, **2.00** x separate",
        "- 4 at once without MPS: 500, 500, 500, 500 = 2000 images/s in all: **x2.22** (the "
        "copies measured together for 93% of their time)",
        "- 4 at once under MPS: 800, 800, 800, 800 = 3200 images/s in all: **x3.56**",
        "| eager step (b1) | 950 | 1.00 | - |",
        "| whole update as one CUDA graph (b4) | 3500 | 3.68 | >= 3x eager |",
        "| 3 seeds fused (b3) | 3300 | 3.47 | >= 2x 3 separate |",
        "| 4 jobs packed, MPS (e) | 3200 | 3.37 | - |",
        "- Table 7 study, --jobs 1 (c1): **10.5 min** (goal <= 10 min)",
    ):
        assert expected in text


def test_a_killed_test_run_is_read_from_its_log(tmp_path):
    log = tmp_path / "tests.log"
    log.write_text(
        "collected 20 items / 7 deselected / 13 selected\n\n"
        "tests/test_cuda.py::test_a_bf16_update_in_channels_last PASSED            [  7%]\n"
        "tests/test_data.py::test_channels_last_output[cuda] SKIPPED (no GPU)      [ 14%]\n"
        "tests/test_cuda.py::test_cuda_graphs_give_the_eager_update FAILED         [ 21%]\n"
    )
    cases = load_script().read_verbose(log)
    assert [(case["test"], case["outcome"]) for case in cases] == [
        ("test_cuda::test_a_bf16_update_in_channels_last", "passed"),
        ("test_data::test_channels_last_output[cuda]", "skipped"),
        ("test_cuda::test_cuda_graphs_give_the_eager_update", "failed"),
    ]


def test_a_step_past_its_limit_gets_ctrl_c_first(tmp_path, monkeypatch):
    """A step killed at its limit is interrupted first, so that it can still say what it knows
    (pytest: every failure's message), then killed if it does not end within the grace."""
    script = load_script()
    sigterm = signal.getsignal(signal.SIGTERM)
    check = script.Check(tmp_path, "cpu", quick=True, budget=60)
    signal.signal(signal.SIGTERM, sigterm)  # Check takes SIGTERM over: give it back to pytest
    polite = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('told')"
    with pytest.raises(script.StepFailed, match="killed after 1 s"):
        check.run("polite", [sys.executable, "-c", polite], limit=1)
    assert (tmp_path / "logs" / "polite.log").read_text().endswith("told\n")
    monkeypatch.setattr(script, "STOP_GRACE", 1.0)
    deaf = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    started = time.monotonic()
    with pytest.raises(script.StepFailed, match="killed after 1 s"):
        check.run("deaf", [sys.executable, "-c", deaf], limit=1)
    assert time.monotonic() - started < 10  # SIGKILL after the grace, not the sleep's 60 s


# The loop alone as step b1 measures it (its images/s in "loop").
ALONE = {"loop": 100.0, "wall_s": 5.0, "batch_size": 128, "model": "effnet_b0"}


@pytest.mark.slow
def test_the_packing_step_measures_without_and_under_mps(tmp_path, monkeypatch, mps_control):
    """Step e end to end on the CPU (where gpu_check itself skips it): copies at once (two
    here, for two cores), then as many under the check's own MPS daemon (the stand-in control
    program), which is stopped after. The loop alone is step b1's run (the quick run's test)."""
    script = load_script()
    monkeypatch.setattr(script.signal, "signal", lambda *args: None)  # pytest keeps its SIGTERM
    monkeypatch.setattr(script, "PACKED", 2)
    monkeypatch.setattr(script, "throughput", lambda *args: ALONE)
    check = script.Check(tmp_path / "out", "cpu", quick=True, budget=600)
    result = script.packing(check, 400)
    assert len(result["packed_images_per_s"]) == script.PACKED
    assert result["packed_total_images_per_s"] == pytest.approx(sum(result["packed_images_per_s"]))
    assert result["speedup"] == pytest.approx(result["packed_total_images_per_s"] / 100.0)
    under = result["mps"]
    assert len(under["packed_images_per_s"]) == script.PACKED and under["speedup"] > 0
    calls = mps_control.read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["start", "quit"]
    assert all(0 < r["overlap"] <= 1 for r in (result, under))


def test_copies_failing_under_mps_leave_the_numbers_without_it(tmp_path, monkeypatch, mps_control):
    script = load_script()
    monkeypatch.setattr(script.signal, "signal", lambda *args: None)  # pytest keeps its SIGTERM
    monkeypatch.setattr(script, "throughput", lambda *args: ALONE)
    copy = {"loop": 60.0, "loop_from": 0.0, "loop_to": 10.0}

    def packed(check, tag, seconds, env):
        if env:  # under the daemon: every copy dies
            raise script.StepFailed(f"{tag}: 4 of 4 copies did not finish")
        return [copy] * 4

    monkeypatch.setattr(script, "packed", packed)
    check = script.Check(tmp_path / "out", "cpu", quick=True, budget=60)
    result = script.packing(check, 150)
    assert result["packed_total_images_per_s"] == 240.0 and result["speedup"] == 2.4
    assert result["mps"] == "failed: packing-mps: 4 of 4 copies did not finish"
    assert [line.split()[0] for line in mps_control.read_text().splitlines()] == ["start", "quit"]
    assert "- 4 at once under MPS: failed: packing-mps" in "\n".join(script.render_packing(result))
