"""Everything a GPU session must verify, as one script (``make gpu-check``).

    python benchmarks/gpu_check.py --device cuda|cpu [--quick] --out DIR [--budget SECONDS]
                                   [--steps a,b1,...]

Writes ``DIR/gpu_check.md`` (to read) and ``DIR/gpu_check.json`` (every number), the device's
name and the torch, CUDA and timm versions first, then one section each:

a. tests:      ``pytest -m cuda`` (tests/test_cuda.py and the GPU cases of the DeviceBatches
               tests), per test outcome and seconds;
b. throughput: ``benchmarks/train_throughput.py`` eager (b1), with CUDA graphs of
               torch.compile (b2, ``compile_mode: reduce-overhead``), fused seeds (b3:
               ``benchmarks/fused_seeds.py``), and the whole update as one CUDA graph (b4,
               ``cuda_graph``: loop/limit is the graph's gain over an eager step);
c. plans:      ``sweep table7 --plan`` and ``sweep figure8 --plan`` on synthetic CIFAR-10-shaped
               data, ``--jobs 1`` and ``--jobs 4`` on the one GPU, and table7 with
               ``cuda_graph`` (c5); the projected wall time of the Table 7 study (5 recipes x 3
               seeds x 35 epochs);
d. demo:       ``sweep demo --jobs 4`` (digits): wall time and each model's accuracy;
e. packing:    the trainer's loop alone, then four copies at once on the same GPU, without
               and then under NVIDIA's MPS (a daemon of the check's own, as ``sweep --mps``
               starts): whether packing jobs raises the total throughput, and MPS more.

Each step runs in its own process with a time limit taken from one overall ``--budget``; a step
that fails or runs out of time is recorded as such and the next one runs. Both files are
rewritten after every step, so a killed run still leaves what it measured. ``--steps`` runs
only the steps named (in the order above; the others are recorded as not run), so that a
short GPU lease spends itself on what is still unmeasured. ``--quick`` cuts
every step to a smoke run and plans each sweep once (``--device cpu --quick`` runs in minutes
on a CPU). Exit status: 0
when every step passed, 1 when one failed or was cut, 2 for ``--device cuda`` without a GPU.
The project runs from this checkout (put on PYTHONPATH for the steps); nothing is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# import name -> distribution (what `pip install --no-index` needs); all of them are runtime
# dependencies in pyproject.toml, but pytest (the `dev` extra).
PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "accelerate": "accelerate",
    "calflops": "calflops",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "pandas": "pandas",
    "typer": "typer",
    "rich": "rich",
    "yaml": "pyyaml",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "filelock": "filelock",
    "pytest": "pytest",
}
VERSIONS = ("torch", "timm", "accelerate", "transformers", "calflops", "pandas", "numpy")
TABLE7_SEEDS = 3  # the study: each Table 7 recipe with 3 seeds (its recipes' 35 epochs)
PACKED = 4  # jobs on the one GPU
STEPS = (
    "a",
    "b1",
    "b2",
    "b3",
    "b4",
    "c1",
    "c2",
    "c5",
    "d",
    "c3",
    "e",
    "c4",
)  # in the order they run
NOT_ASKED = "not run: not in --steps"
CUDA_ONLY = "not run: needs a CUDA GPU"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def missing_packages() -> list[str]:
    return [dist for name, dist in PACKAGES.items() if importlib.util.find_spec(name) is None]


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


class Check:
    """The record of one gpu_check run, rewritten to DIR after every step."""

    def __init__(
        self, out: Path, device: str, quick: bool, budget: float, steps: set[str] | None = None
    ) -> None:
        # Absolute: the steps' commands run in the checkout, not where --out was given.
        out = out.absolute()
        self.out, self.device, self.quick, self.steps = out, device, quick, steps
        self.deadline = time.monotonic() + budget
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        self.env.setdefault("TIMM_SCALING_CACHE", str(out / "cache"))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.record: dict[str, Any] = {
            "started": now(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "device": device,
            "quick": quick,
            "budget_s": budget,
            "environment": {},
            "steps": {},
        }
        self.running: subprocess.Popen | None = None
        signal.signal(signal.SIGTERM, self._stopped)

    def _stopped(self, signum, frame) -> None:
        """Stopped from outside (SIGTERM, e.g. `timeout`): end the step's processes, record it."""
        if self.running is not None:
            kill_group(self.running)
        for step in self.record["steps"].values():
            if step["status"] == "running":
                step["status"] = "failed: gpu_check was stopped (SIGTERM) during this step"
        self.save()
        sys.exit(1)

    # -- running steps ----------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, title: str, limit: float, fn, *args) -> Any:
        """Run ``fn(self, limit, *args)`` as one step; record its numbers, or its failure."""
        limit = min(limit, self.left())
        entry: dict[str, Any] = {"title": title, "status": "running", "started": now()}
        self.record["steps"][name] = entry
        if self.steps is not None and name not in self.steps:
            entry["status"] = NOT_ASKED
            self.save()
            return None
        if limit < 15:
            entry["status"] = "not run: out of time (raise --budget)"
            self.save()
            return None
        self.save()
        started = time.monotonic()
        try:
            entry.update(fn(self, limit, *args) or {})
            entry["status"] = entry.get("status", "running")
            if entry["status"] == "running":
                entry["status"] = "ok"
        except StepFailed as err:
            entry["status"] = f"failed: {err}"
        except Exception as err:  # a bug or surprise of one step must not stop the others
            entry["status"] = f"failed: {type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()
        entry["seconds"] = round(time.monotonic() - started, 1)
        self.save()
        print(f"[{entry['seconds']:6.1f} s] {name}: {entry['status']}", flush=True)
        return entry

    def run(self, log: str, args: list[str], limit: float) -> tuple[float, str]:
        """Run a command with this checkout on PYTHONPATH, its output in logs/LOG.log; returns
        the wall time and the output. A command past ``limit`` seconds is killed (its process
        group, so a sweep's workers go too)."""
        path = self.logs / f"{log}.log"
        started = time.monotonic()
        with path.open("w") as handle:
            handle.write(f"$ {' '.join(args)}\n")
            handle.flush()
            process = subprocess.Popen(
                args,
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Ctrl-C's default action, even where gpu_check itself runs in the background
                # with SIGINT ignored (children inherit that): kill_group's Ctrl-C must land.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            self.running = process
            try:
                code = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(process)
                raise StepFailed(
                    f"killed after {limit:.0f} s (its time limit); see {path}"
                ) from None
            finally:
                self.running = None
        seconds = time.monotonic() - started
        text = path.read_text(errors="replace")
        if code != 0:
            said = [line.strip(" │╭╮╰╯─") for line in text.splitlines()]  # rich's boxes too
            last = [line for line in said if line][-1:] or [""]
            raise StepFailed(f"exit {code} after {seconds:.0f} s: {last[0][-300:]} (see {path})")
        return seconds, text

    def cli(self, log: str, args: list[str], limit: float) -> tuple[float, str]:
        return self.run(log, [sys.executable, "-m", "timm_scaling", *args], limit)

    # -- output -----------------------------------------------------------------------------

    def save(self) -> None:
        from timm_scaling.files import atomic_write

        self.record["updated"] = now()
        atomic_write(self.out / "gpu_check.json", json.dumps(self.record, indent=1) + "\n")
        atomic_write(self.out / "gpu_check.md", render(self.record))


# Seconds a step stopped at its limit has to end by itself after Ctrl-C (pytest writes its
# summary and XML with every failure's message; a sweep says how to resume) before SIGKILL.
STOP_GRACE = 15.0


def kill_group(process: subprocess.Popen) -> None:
    """Stop a step's process and everything it started (a sweep's workers): Ctrl-C first,
    then, after STOP_GRACE seconds, SIGKILL."""
    for sig, grace in ((signal.SIGINT, STOP_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class StepFailed(Exception):
    """A step's command failed or ran out of time: one line, the log has the rest."""


# -- environment ----------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git_commit(),
        "versions": {name: version(name) for name in VERSIONS},
        "missing": missing_packages(),
    }
    import torch

    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if device == "cuda":
        env.update(gpu_properties())
    else:
        env["device_name"] = cpu_name()
        env["cpu_count"] = os.cpu_count()
    return env


GPU_PROPERTIES = """
import json, torch
p = torch.cuda.get_device_properties(0)
print(json.dumps({"device_name": p.name, "device_memory_mb": round(p.total_memory / 2**20),
    "device_count": torch.cuda.device_count(), "capability": f"{p.major}.{p.minor}"}))
"""


def gpu_properties() -> dict[str, Any]:
    """The GPU's name and memory, asked in a child process: in this one, CUDA would keep a
    context (hundreds of MB of the card) for the whole check."""
    done = subprocess.run(
        [sys.executable, "-c", GPU_PROPERTIES], capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- a. the CUDA tests ----------------------------------------------------------------------


def tests(check: Check, limit: float) -> dict[str, Any]:
    xml = check.out / "cuda_tests.xml"
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider"]
    args += ["-o", "addopts=", "-rfE", f"--junitxml={xml}", *cuda_test_files()]
    try:
        check.run("tests", args, limit)
        status = None
    except StepFailed as err:
        status = f"failed: {err}"
    # pytest writes its XML at the end: a run killed at its limit leaves only the log's lines.
    cases = read_junit(xml) if xml.exists() else read_verbose(check.logs / "tests.log")
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    result = {"tests": cases, "counts": counts}
    if status:
        result["status"] = status
    elif not counts.get("passed") and check.device == "cuda":
        result["status"] = "failed: no test ran on the GPU (all skipped)"
    return result


def cuda_test_files() -> list[str]:
    """The test files that mark tests ``cuda`` (collecting only them saves importing the rest)."""
    files = sorted(REPO.glob("tests/test_*.py"))
    return [str(f.relative_to(REPO)) for f in files if "mark.cuda" in f.read_text()]


def read_verbose(path: Path) -> list[dict[str, Any]]:
    """``tests/test_x.py::test_y PASSED [ 10%]`` lines of ``pytest -v``."""
    cases = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in VERBOSE:
            test = Path(parts[0].split("::")[0]).stem + "::" + parts[0].split("::", 1)[1]
            cases.append({"test": test, "outcome": VERBOSE[parts[1]], "seconds": None})
            cases[-1]["message"] = ""
    return cases


VERBOSE = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "ERROR": "error"}


def read_junit(path: Path) -> list[dict[str, Any]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
                message = (found.get("message") or "").strip().split("\n")[0][:300]
                break
        cases.append(
            {
                "test": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                "outcome": outcome,
                "seconds": round(float(case.get("time") or 0), 1),
                "message": message,
            }
        )
    return cases


# -- b. throughput --------------------------------------------------------------------------


def throughput_args(check: Check, log: str, *extra: str) -> list[str]:
    args = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py")]
    args += ["--device", check.device, "--json", str(check.logs / f"{log}.json"), *extra]
    if check.quick:
        args.append("--quick")
    elif check.device == "cuda":
        args += ["--batch-size", "128", "--seconds", "5"]  # the CIFAR recipes' batch
    return args


def throughput(check: Check, limit: float, log: str, *extra: str) -> dict[str, Any]:
    seconds, _ = check.run(log, throughput_args(check, log, *extra), limit)
    result = json.loads((check.logs / f"{log}.json").read_text())
    result["wall_s"] = round(seconds, 1)
    return result


def fused(check: Check, limit: float) -> dict[str, Any]:
    """Three seeds of B0 as one vmapped step against the same seeds stepped in turn
    (benchmarks/fused_seeds.py), at the CIFAR recipes' batch on a GPU."""
    path = check.logs / "fused.json"
    args = [sys.executable, str(REPO / "benchmarks" / "fused_seeds.py")]
    args += ["--device", check.device, "--seeds", "3", "--json", str(path)]
    args += ["--steps", "2", "--batch-size", "16"] if check.quick else ["--steps", "20"]
    seconds, _ = check.run("fused", args, limit)
    return {**json.loads(path.read_text()), "wall_s": round(seconds, 1)}


# -- c. plans -------------------------------------------------------------------------------


def plan(check: Check, limit: float, sweep: str, jobs: int, *sets: str) -> dict[str, Any]:
    """``sweep SWEEP --plan`` on synthetic data, ``jobs`` at a time, with ``--set`` ``sets``."""
    output = check.out / "plans" / "-".join([f"jobs{jobs}", *sets])
    args = ["sweep", sweep, "--plan", "--dataset", "synthetic", "--jobs", str(jobs)]
    args += [arg for text in sets for arg in ("--set", text)]
    args += ["--output", str(output), "--plan-seconds", "0.5" if check.quick else "1"]
    if check.quick:  # a smoke run: B0 only, on fewer images
        args += ["--shard", "1/13" if sweep == "figure8" else "1/5"]
        args += ["--set", "synthetic_train_size=1024", "--set", "synthetic_val_size=256"]
    seconds, text = check.cli("-".join([f"plan-{sweep}-jobs{jobs}", *sets]), args, limit)
    rows = [numbers(row) for row in read_csv(output / sweep / "plan.csv")]
    run_s = [row["run_s"] for row in rows if isinstance(row.get("run_s"), float)]
    result: dict[str, Any] = {
        "wall_s": round(seconds, 1),
        "rows": rows,
        "runs": len(rows),
        "total_run_s": sum(run_s),
        "wall_time_s": wall_time(run_s, jobs),
        "printed": [line for line in text.splitlines() if line.startswith(("total", "wall", "by"))],
    }
    if sweep == "table7" and len(run_s) == len(rows):
        # The study: every run with 3 seeds (a seed costs what another does).
        result["study_s"] = wall_time(run_s * TABLE7_SEEDS, jobs)
    return result


def wall_time(run_s: list[float], jobs: int) -> float:
    from timm_scaling.plan import wall_time as projected

    return projected(run_s, jobs) if run_s else 0.0


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def numbers(row: dict[str, str]) -> dict[str, Any]:
    """CSV strings to floats where they are numbers, None where empty."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        try:
            out[key] = float(value) if value != "" else None
        except ValueError:
            out[key] = value
    return out


# -- d. the demo sweep ----------------------------------------------------------------------


def demo(check: Check, limit: float) -> dict[str, Any]:
    output = check.out / "demo"
    args = ["sweep", "demo", "--jobs", str(PACKED), "--output", str(output)]
    if check.quick:
        args += ["--shard", "1/4", "--set", "limit_train=64", "--set", "limit_val=64"]
        args += ["--epochs", "1"]
    try:
        seconds, _ = check.cli("demo", args, limit)
        status = None
    except StepFailed as err:  # the runs may be done though the frontier at the end failed
        seconds, status = None, f"failed: {err}"
    runs = []
    for path in sorted(output.glob("*/result.json")):
        result = json.loads(path.read_text())
        keys = ("model", "img_size", "top1", "top5", "train_time_s", "peak_mem_mb", "device")
        runs.append({key: result.get(key) for key in keys})
    entry: dict[str, Any] = {"wall_s": seconds, "runs": runs}
    if status:
        entry["status"] = status
    return entry


# -- e. packing -----------------------------------------------------------------------------


def packing(check: Check, limit: float) -> dict[str, Any]:
    """The loop alone, then PACKED copies measuring at the same time on the same GPU (each
    waits for all to be warm), then the same under an MPS daemon of the check's own
    (``sweep --mps``), where the driver has one; ``overlap``: the share of their measuring
    time all shared."""
    from timm_scaling import mps

    alone = throughput(check, limit / 3, "packing-1", "--only", "loop")
    left = max(20.0, limit - alone["wall_s"] - 5)
    together = packed(check, "packing", left / 2, {})
    result = {
        "alone_images_per_s": alone["loop"],
        **totals(together, alone["loop"]),
        "batch_size": alone["batch_size"],
        "model": alone["model"],
    }
    with mps.mps_daemon() as env:
        if not env:  # mps_daemon's warning says why
            result["mps"] = (
                "not measured: no MPS daemon of the check's own (no control program, one "
                "running already, or it did not start)"
            )
            return result
        try:
            under_mps = packed(check, "packing-mps", left / 2, env)
        except StepFailed as err:  # the numbers without MPS stand
            result["mps"] = f"failed: {err}"
            return result
    result["mps"] = totals(under_mps, alone["loop"])
    return result


def packed(check: Check, tag: str, seconds: float, env: dict[str, str]) -> list[dict]:
    """PACKED copies of the loop started together (``env`` added to each), within
    ``seconds``: each copy's record."""
    ready = check.logs / f"{tag}-ready"
    shutil.rmtree(ready, ignore_errors=True)  # a rerun into the same --out starts afresh
    extra = ["--only", "loop", "--copies", str(PACKED), "--ready-dir", str(ready)]
    processes, logs = [], [f"{tag}-{PACKED}-{i}" for i in range(PACKED)]
    for log in logs:
        args = throughput_args(check, log, *extra)
        with (check.logs / f"{log}.log").open("w") as handle:
            processes.append(
                subprocess.Popen(
                    args,
                    cwd=REPO,
                    env={**check.env, **env},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + seconds
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    together = []
    for log in logs:
        path = check.logs / f"{log}.json"
        if path.exists():
            together.append(json.loads(path.read_text()))
    if len(together) < PACKED:
        raise StepFailed(f"{tag}: {PACKED - len(together)} of {PACKED} copies did not finish")
    return together


def totals(together: list[dict], alone: float) -> dict[str, Any]:
    """Packed copies' images/s, in all and against one copy ``alone``; their overlap."""
    total = sum(copy["loop"] for copy in together)
    shared = min(c["loop_to"] for c in together) - max(c["loop_from"] for c in together)
    longest = max(c["loop_to"] - c["loop_from"] for c in together)
    return {
        "packed_images_per_s": [copy["loop"] for copy in together],
        "packed_total_images_per_s": total,
        "speedup": total / alone,
        "overlap": max(0.0, shared) / longest,
    }


# -- the report -----------------------------------------------------------------------------


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"


def fmt(value: Any, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def render(record: dict[str, Any]) -> str:
    env, steps = record["environment"], record["steps"]
    versions = env.get("versions", {})
    lines = [
        f"# GPU check: {env.get('device_name', record['device'])}",
        "",
        f"- device: {env.get('device_name', '?')} ({record['device']}"
        + (f", {env['device_memory_mb']} MiB" if env.get("device_memory_mb") else "")
        + ")",
        f"- torch {versions.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"timm {versions.get('timm')}, accelerate {versions.get('accelerate')}, "
        f"Python {env.get('python')}",
        f"- other: transformers {versions.get('transformers')}, calflops "
        f"{versions.get('calflops')}, pandas {versions.get('pandas')}, numpy "
        f"{versions.get('numpy')}; checkout {env.get('commit')}",
        f"- started {record['started']}, updated {record.get('updated')}; "
        f"`{record['command']}` (budget {record['budget_s']:.0f} s"
        + (", quick: smoke-run sizes, not measurements" if record["quick"] else "")
        + ")",
        f"- missing packages: {', '.join(env.get('missing') or []) or 'none'}"
        + (" (see benchmarks/README.md: bring their wheels)" if env.get("missing") else ""),
        "",
        *side_by_side(steps),
        "| step | status | seconds |",
        "| --- | --- | ---: |",
    ]
    for name, step in steps.items():
        lines.append(f"| {name}: {step['title']} | {step['status']} | {fmt(step.get('seconds'))} |")
    lines.append("")
    for name, step in steps.items():
        body = SECTIONS.get(name)
        if body is None or step["status"] == "running" or step["status"].startswith("not run"):
            continue
        lines += [f"## {name}: {step['title']}", ""]
        try:
            lines += body(step)
        except Exception as err:  # a half-written step must not stop the report
            lines.append(f"(cannot show: {type(err).__name__}: {err})")
        lines.append("")
    return "\n".join(lines) + "\n"


def side_by_side(steps: dict[str, Any]) -> list[str]:
    """The speeds of this run in one table, each against the eager loop (b1), with its goal,
    and the Table 7 study's projections: what the steps below measured, where they did."""

    def measured(name: str, *keys: str) -> float | None:
        value: Any = steps.get(name, {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, (int, float)) else None

    eager = measured("b1", "loop")
    speeds = [
        ("eager step (b1)", eager, "-"),
        ("whole update as one CUDA graph (b4)", measured("b4", "loop"), ">= 3x eager"),
        ("3 seeds fused (b3)", measured("b3", "fused"), ">= 2x 3 separate"),
        (f"{PACKED} jobs packed (e)", measured("e", "packed_total_images_per_s"), "-"),
        (f"{PACKED} jobs packed, MPS (e)", measured("e", "mps", "packed_total_images_per_s"), "-"),
    ]
    studies = [
        ("Table 7 study, --jobs 1 (c1)", measured("c1", "study_s")),
        (f"Table 7 study, --jobs {PACKED} (c2)", measured("c2", "study_s")),
        (f"Table 7 study, --jobs {PACKED}, cuda_graph (c5)", measured("c5", "study_s")),
    ]
    lines = ["| measured | images/s | x eager | goal |", "| --- | ---: | ---: | --- |"]
    for what, value, goal in speeds:
        if value is not None:
            ratio = f"{value / eager:.2f}" if eager else "-"
            lines.append(f"| {what} | {value:.0f} | {ratio} | {goal} |")
    lines = lines if len(lines) > 2 else []
    lines += [
        f"- {what}: **{minutes(value)}** (goal <= 10 min)" for what, value in studies if value
    ]
    return lines + [""] if lines else []


def render_tests(step: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(step.get("counts", {}).items()))
    lines = [f"`pytest -m cuda`: {counts or 'no result'}", "", "| test | outcome | s | message |"]
    lines.append("| --- | --- | ---: | --- |")
    for case in step.get("tests", []):
        message = case["message"].replace("|", "/")
        seconds = fmt(case["seconds"], ".1f")
        lines.append(f"| {case['test']} | {case['outcome']} | {seconds} | {message} |")
    return lines


def render_throughput(step: dict[str, Any]) -> list[str]:
    if "loop" not in step:
        return []
    ratio = ", ".join(
        f"loop/{k} **{step[f'loop_over_{k}']:.2f}**" for k in ("limit", "plain") if k in step
    )
    graph = step.get("cuda_graph")  # the loop graphed, limit and plain eager
    goals = "goal: loop/limit >= 3" if graph else "goals: loop/limit >= 0.9, loop/plain >= 2"
    return [
        f"{step['model']} at {step['img_size']} px, batch {step['batch_size']}, "
        f"precision {step['mixed_precision']}, compile {step.get('compile_mode') or 'no'}, "
        f"cuda_graph {'on' if graph else 'off'}, "
        f"optimizer step {step['optimizer_step']}, warm-up {step['warm_up_s']:.1f} s:",
        "",
        f"limit {fmt(step.get('limit'))} images/s, loop {fmt(step['loop'])}, plain "
        f"{fmt(step.get('plain'))}: {ratio} ({goals})",
    ]


def render_fused(step: dict[str, Any]) -> list[str]:
    if "fused" not in step:
        return []
    return [
        f"{step['model']} at {step['image_size']} px, {step['seeds']} seeds x batch "
        f"{step['batch_size']}: separate {fmt(step['separate'])} images/s, fused "
        f"{fmt(step['fused'])}: fused/separate **{step['fused/separate']:.2f}** (goal: >= 2)",
        *(
            [
                f"as `sweep --fuse-seeds` steps (each seed's optimizer): "
                f"{fmt(step['fused_per_seed'])} images/s, "
                f"**{step['fused_per_seed/separate']:.2f}** x separate"
            ]
            if "fused_per_seed" in step
            else []
        ),
    ]


def render_plan(step: dict[str, Any]) -> list[str]:
    lines = ["| model | img | batch | micro | images/s | peak MB | epoch | run |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in step.get("rows", []):
        lines.append(
            f"| {row['model']} | {fmt(row['img_size'])} | {fmt(row['batch_size'])} | "
            f"{fmt(row['micro_batches'])} | {fmt(row['images_per_s'])} | "
            f"{fmt(row['peak_mem_mb'])} | {minutes(row['epoch_s'])} | {minutes(row['run_s'])} |"
        )
    lines += ["", *step.get("printed", [])]
    if "study_s" in step:
        lines += [
            "",
            f"**The Table 7 study ({step['runs']} recipes x {TABLE7_SEEDS} seeds, their epochs):"
            f" {minutes(step['study_s'])}** of wall time with these jobs (goal with packing:"
            " under 10 min on one H100).",
        ]
    return lines


def render_demo(step: dict[str, Any]) -> list[str]:
    lines = [f"wall time {minutes(step.get('wall_s'))}", ""]
    lines += [
        "| model | img | top1 | top5 | train s | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in step.get("runs", []):
        lines.append(
            f"| {run['model']} | {run['img_size']} | {fmt(run['top1'], '.1f')} | "
            f"{fmt(run['top5'], '.1f')} | {fmt(run['train_time_s'], '.1f')} | "
            f"{fmt(run['peak_mem_mb'])} |"
        )
    return lines


def render_packing(step: dict[str, Any]) -> list[str]:
    if "speedup" not in step:
        return []
    lines = [f"{step['model']}, batch {step['batch_size']}, the trainer's loop:"]
    lines.append(f"- alone: {step['alone_images_per_s']:.0f} images/s")
    for name, packed in (("without MPS", step), ("under MPS", step.get("mps"))):
        if not isinstance(packed, dict):
            lines.append(f"- {PACKED} at once {name}: {packed}")
            continue
        each = ", ".join(f"{v:.0f}" for v in packed["packed_images_per_s"])
        lines.append(
            f"- {PACKED} at once {name}: {each} = {packed['packed_total_images_per_s']:.0f} "
            f"images/s in all: **x{packed['speedup']:.2f}** (the copies measured together for "
            f"{packed['overlap']:.0%} of their time)"
        )
    return lines


SECTIONS = {
    "a": render_tests,
    "b1": render_throughput,
    "b2": render_throughput,
    "b3": render_fused,
    "b4": render_throughput,
    "c1": render_plan,
    "c2": render_plan,
    "c3": render_plan,
    "c4": render_plan,
    "c5": render_plan,
    "d": render_demo,
    "e": render_packing,
}


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--quick", action="store_true", help="smoke-run sizes (minutes on a CPU)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report and logs")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds for everything [default: 460 on a GPU (under 8 min), 170 with --quick]",
    )
    parser.add_argument(
        "--steps", help=f"run only these steps, comma separated ({', '.join(STEPS)}) [default: all]"
    )
    args = parser.parse_args(argv)
    steps = None
    if args.steps is not None:
        steps = {name.strip() for name in args.steps.split(",") if name.strip()}
        unknown = sorted(steps - set(STEPS))
        if unknown or not steps:
            print(
                f"error: --steps {args.steps}: no step {', '.join(unknown) or 'named'}; "
                f"choose from {', '.join(STEPS)}",
                file=sys.stderr,
            )
            return 2
    missing = missing_packages()
    if "torch" in missing:
        print(f"error: torch is missing; {how_to_bring(missing)}", file=sys.stderr)
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device cuda: no CUDA GPU is visible to torch {torch.__version__} "
            f"(CUDA build {torch.version.cuda}); run on a GPU machine, or pass --device cpu",
            file=sys.stderr,
        )
        return 2
    budget = args.budget or (170.0 if args.quick else 460.0)
    check = Check(args.out, args.device, args.quick, budget, steps)
    check.record["environment"] = environment(args.device)
    check.save()
    print(f"gpu_check: {check.record['environment']['device_name']}; writing {args.out}")
    if missing:  # the steps that need them fail in seconds, and say so
        print(f"missing: {how_to_bring(missing)}", file=sys.stderr)
    cuda = args.device == "cuda"

    def cap(seconds: float) -> float:
        """A step's own limit on a GPU (so that one stuck step leaves time for the others);
        on a CPU, whatever the budget has left."""
        return seconds if cuda else budget

    def on_gpu(fn):
        """A step only a GPU can measure (compiling on a CPU takes minutes and shows nothing
        about CUDA graphs; packing is about sharing one GPU): recorded as not run on a CPU."""
        return fn if cuda else lambda check, limit, *args: {"status": CUDA_ONLY}

    check.step("a", "pytest -m cuda", cap(200), tests)
    check.step("b1", "train_throughput, eager", cap(90), throughput, "throughput-eager")
    graphs = ("throughput-graphs", "--compile-mode", "reduce-overhead")
    title = "train_throughput, CUDA graphs (compile_mode reduce-overhead)"
    check.step("b2", title, cap(150), on_gpu(throughput), *graphs)
    check.step("b3", "fused seeds: 3 as one step against 3 in turn", cap(60), fused)
    whole = ("throughput-cuda-graph", "--cuda-graph")
    title = "train_throughput, the whole update as one CUDA graph (cuda_graph)"
    check.step("b4", title, cap(90), throughput, *whole)
    check.step("c1", "sweep table7 --plan --jobs 1", cap(200), plan, "table7", 1)
    full = not args.quick  # a smoke run plans each sweep once: c1 jobs 1, c3 jobs 4
    if full:
        check.step("c2", f"sweep table7 --plan --jobs {PACKED}", cap(150), plan, "table7", PACKED)
    title = f"sweep table7 --plan --jobs {PACKED} --set cuda_graph=true"
    check.step("c5", title, cap(150), plan, "table7", PACKED, "cuda_graph=true")
    check.step("d", f"sweep demo --jobs {PACKED}", cap(150), demo)
    check.step("c3", f"sweep figure8 --plan --jobs {PACKED}", cap(150), plan, "figure8", PACKED)
    check.step(
        "e", f"packing: {PACKED} jobs on one GPU, without and under MPS", cap(150), on_gpu(packing)
    )
    if full:
        check.step("c4", "sweep figure8 --plan --jobs 1", cap(150), plan, "figure8", 1)
    failed = [
        name
        for name, step in check.record["steps"].items()
        if step["status"] not in ("ok", NOT_ASKED, CUDA_ONLY)
    ]
    failed += ["packages"] if missing else []
    print(
        f"wrote {args.out / 'gpu_check.md'} and gpu_check.json; "
        f"not ok: {', '.join(failed) or 'none'}"
    )
    return 1 if failed else 0


def how_to_bring(missing: list[str]) -> str:
    return (
        f"{', '.join(missing)} cannot be imported; bring their wheels and "
        "`pip install --no-index --find-links WHEELS " + " ".join(missing) + "` "
        "(benchmarks/README.md)"
    )


if __name__ == "__main__":
    sys.exit(main())
