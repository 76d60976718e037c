"""Ctrl-C and SIGTERM in `train` and in `sweep --jobs 2`, and kill -9: real processes, real
signals.

A terminal sends SIGINT to the whole foreground process group; SLURM and `kill PID` send SIGTERM
to one process. Either way every job stops at once, no new run starts, the counts are true, the
message says how to resume, the exit code is 130 or 143, and running the same command again
finishes every run. Killed outright, a command takes its processes with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import (
    WAIT_S,
    group_members,
    left_alive,
    live_processes,
    processes_naming,
    start,
    wait_for,
)

from timm_scaling.files import locked
from timm_scaling.runs import LOCK_FILE, RECIPE_FILE, latest_checkpoint

TINY = ["limit_train=64", "limit_val=32", "batch_size=32", "eval_batch_size=32", "epochs=4"]


@pytest.fixture
def env(tmp_path_factory):
    """The suite's shared cost cache: each model's cost is counted once, not in every process."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    return dict(os.environ, TIMM_SCALING_CACHE=str(cache))


def epochs_done(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def dry_run(command: list[str]) -> list[str]:
    """The state `sweep --dry-run` lists for each run."""
    out = subprocess.run(
        [sys.executable, "-m", "timm_scaling", *command, "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("  ", 1)[1] for line in out.stdout.splitlines()]


def interrupt(
    process: subprocess.Popen, whole_group: bool, signum: int = signal.SIGINT
) -> tuple[str, str]:
    """``signum`` to the process (its whole group: a terminal's Ctrl-C); it ends at once with
    128 + signum, and no process of its group is left."""
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)  # at once: no job trains on to its end
    assert process.returncode == 128 + signum, (out, err)
    assert left_alive(lambda: group_members(process.pid), 10) == [], "a job outlived the sweep"
    return out, err


@pytest.mark.slow
def test_ctrl_c_or_sigterm_stops_every_job_of_a_sweep_and_the_sweep_resumes(tmp_path, env):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": "digits", "set": TINY, "models": ["effnet_b0"]}))
    output = tmp_path / "runs"
    folders = [output / f"digits-effnet_b0-s{seed}" for seed in range(3)]  # equally fast runs
    command = ["sweep", str(sweep), "--seeds", "3", "--output", str(output), "--jobs", "2"]

    # 1. SIGTERM to the sweep process alone (SLURM's, before a kill), once both jobs are
    # training and one has finished an epoch (the second job starts seconds after the first:
    # waiting for an epoch of each, the first may have finished and started the third run).
    process = start(command, env)
    wait_for(lambda: epochs_done(folders[0]) >= 1 and (folders[1] / RECIPE_FILE).exists(), process)
    assert not folders[2].exists()
    _, err = interrupt(process, whole_group=False, signum=signal.SIGTERM)
    assert not folders[2].exists(), "a new run started after the interrupt"
    finished = sum((f / "result.json").exists() for f in folders)
    assert f"trained {finished} run(s), {3 - finished} not finished" in err
    assert "run the same command again to resume" in err
    assert err.strip().splitlines()[-1].startswith("terminated:")
    done = [epochs_done(f) for f in folders]
    # --dry-run lists each run's state, a folder trained with other settings among them.
    states = [f"resumable from epoch {k}" if k else "to train" for k in done]
    assert dry_run(command) == states
    assert dry_run([*command, "--epochs", "5"]) == [
        "conflicting (epochs differ; delete it or use another --output)" if k else "to train"
        for k in done
    ]

    # 2. Run it again; SIGINT to the whole process group (a terminal's Ctrl-C) once it resumed.
    process = start(command, env)
    wait_for(lambda: sum(map(epochs_done, folders)) > sum(done), process)
    _, err = interrupt(process, whole_group=True)
    now = sum((f / "result.json").exists() for f in folders)
    assert f"trained {now - finished} run(s), {3 - now} not finished" in err

    before = {f.name for f in folders if (f / "result.json").exists()}
    # 3. Run it again to the end: every run resumed where it stopped, each epoch trained once.
    final = subprocess.run(
        [sys.executable, "-m", "timm_scaling", *command], env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr
    for folder in folders:  # each run's top-1 is printed as it lands
        top1 = json.loads((folder / "result.json").read_text())["top1"]
        assert (f"{folder}: top1 {top1:.2f}" in final.stdout) == (folder.name not in before)
    assert dry_run(command) == ["finished"] * 3
    for folder in folders:
        epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").open()]
        assert epochs == [1, 2, 3, 4], folder


def test_sigterm_as_the_command_exits_ends_it_without_a_traceback(env):
    """A SIGTERM that arrives after the command finished, while Python exits (a job's time
    limit at the very end): the process ends as SIGTERM ends it, without the traceback of a
    Ctrl-C raised in an exit handler."""
    code = (
        "import atexit, os, signal, sys, time\n"
        "from timm_scaling.cli import main\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))\n"
        "sys.argv = ['timm-scaling', '--version']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == -signal.SIGTERM and done.stdout.startswith("timm-scaling ")
    assert "Traceback" not in done.stderr, done.stderr


POOL = (  # a sweep's pool of two jobs, each a minute long, SIGHUP handled as the CLI does
    "import signal, sys, time\n"
    "from timm_scaling.cli.base import HungUp, _terminate\n"
    "from timm_scaling.workers import in_pool\n"
    "signal.signal(signal.SIGHUP, _terminate)\n"
    "try:\n"
    "    in_pool(time.sleep, [60, 60], 2, [], print)\n"
    "except HungUp:\n"
    "    sys.exit(129)\n"
)


def ignores(pid: int, signum: int) -> bool:
    """Whether process ``pid`` ignores ``signum`` (its /proc status's SigIgn mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_hang_up_stops_every_job_without_a_traceback(env):
    """SIGHUP to the process group (a terminal closed under a sweep): the jobs ignore it and
    are stopped by the sweep, which ends with 129 and no traceback; multiprocessing's resource
    tracker, killed by it, was started again on the way out and printed a KeyError per queue."""
    process = subprocess.Popen(
        [sys.executable, "-c", POOL], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def jobs() -> list[int]:
        return [pid for pid in group_members(process.pid) if pid in processes_naming("spawn_")]

    wait_for(lambda: len(jobs()) == 2 and all(ignores(p, signal.SIGHUP) for p in jobs()), process)
    os.killpg(process.pid, signal.SIGHUP)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 129 and "Traceback" not in err, err
    assert left_alive(lambda: group_members(process.pid), 10) == [], "a job outlived the sweep"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_dies_with_its_parent():
    """`die_with_parent`, as `launch` starts `accelerate launch` with it: kill -9 the parent
    and the child (60 s of sleep to go) gets SIGTERM at once."""
    code = (
        "import subprocess, sys\n"
        "from timm_scaling.train.launch import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "preexec_fn=die_with_parent)\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    alive = left_alive(lambda: [child] if child in live_processes() else [], 10)
    assert not alive, "the child outlived its parent"


LAUNCHER = (  # `accelerate launch` as it starts a worker: the worker inherits stdin and stdout
    "import os, subprocess, sys, time\n"
    "worker = subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
    "print(worker.pid, flush=True)\n"
    "time.sleep(60)\n"
)
WORKER = (  # asks once told to (its imports done), then would train for a minute
    "import sys, time\n"
    "from timm_scaling.train.launch import die_with_launcher\n"
    "sys.stdin.readline()\n"
    "die_with_launcher()\n"
    "print('asked', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("launcher_killed", ["before the worker asks", "after"])
def test_a_worker_ends_with_its_launcher_even_one_killed_as_it_started(env, launcher_killed):
    """`die_with_launcher`, as a `--num-processes` worker calls it seconds after it started: a
    launcher killed before that left the worker training on (it asked of the process that had
    adopted it); one killed after ends it as before. This process is the command."""
    from timm_scaling.train.launch import LAUNCHED_BY_ENV

    env = dict(env, **{LAUNCHED_BY_ENV: str(os.getpid())})
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = int(launcher.stdout.readline())
    if launcher_killed == "after":
        launcher.stdin.write("\n")
        launcher.stdin.flush()
        assert launcher.stdout.readline() == "asked\n"
        assert worker in live_processes()  # its launcher alive, it goes on
    launcher.kill()
    launcher.wait()
    if launcher_killed == "before the worker asks":
        launcher.stdin.write("\n")
        launcher.stdin.flush()
    left = left_alive(lambda: [worker] if worker in live_processes() else [], 30)
    launcher.stdin.close()
    launcher.stdout.close()
    assert not left, "the worker outlived its launcher"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_num_processes_workers_end_with_their_launcher(tmp_path, env):
    """`train --num-processes 2` with `accelerate launch` between it and the workers killed
    (kill -9 of the command reaches the launcher as above): the workers stop, where they trained
    on unlocked beside the next command; the run's lock is free and its last finished epoch
    kept for --resume (resuming itself: test_faults.py's signal tests)."""
    output = tmp_path / "runs"
    args = ["train", "digits", "--num-processes", "2", "--output", str(output)]
    args += [a for o in TINY for a in ("--set", o)]
    command = start(args, env)
    folder = output / "digits-effnet_b0-s0"
    wait_for(lambda: epochs_done(folder) >= 1, command)
    launcher = [p for p in processes_naming(str(output)) if "accelerate" in
                Path(f"/proc/{p}/cmdline").read_text()]  # fmt: skip
    assert len(launcher) == 1 and len(processes_naming(str(output))) == 4  # + 2 workers
    os.kill(launcher[0], signal.SIGKILL)
    left = left_alive(lambda: processes_naming(str(output)), 60)
    assert not left, "workers outlived what launched them"
    command.wait()  # not communicate(): a worker left alive would hold the pipes open
    command.stdout.close()
    command.stderr.close()
    assert epochs_done(folder) < 4
    with locked(folder / LOCK_FILE, wait=False):  # what the next command takes first
        pass
    assert latest_checkpoint(folder) is not None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sweep_killed_as_its_jobs_start_leaves_none(tmp_path, env):
    """kill -9 to the sweep while its job processes are still starting (importing torch, the
    seconds before they can ask to end with it): they asked of the process that adopted them,
    found no work and waited for it forever, two idle processes per kill. Now they end."""
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": "digits", "set": TINY, "models": ["effnet_b0"]}))
    command = ["sweep", str(sweep), "--seeds", "2", "--output", str(tmp_path), "--jobs", "2"]
    process = start(command, env)

    def jobs() -> list[int]:
        return [pid for pid in group_members(process.pid) if pid in processes_naming("spawn_")]

    wait_for(lambda: len(jobs()) == 2, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    process.stderr.close()
    assert not left_alive(lambda: group_members(process.pid), 60), "jobs outlived the sweep"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sweep_killed_outright_leaves_no_job_training(tmp_path, env):
    """kill -9 to the sweep process alone: its jobs trained their runs on (locked, so the
    sweep run again was refused them). Now they end with it: each run's lock is free and the
    sweep run again resumes each from its last finished epoch (resuming itself is the Ctrl-C
    test's)."""
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({"recipe": "digits", "set": TINY, "models": ["effnet_b0"]}))
    output = tmp_path / "runs"
    folders = [output / f"digits-effnet_b0-s{seed}" for seed in range(2)]
    command = ["sweep", str(sweep), "--seeds", "2", "--output", str(output), "--jobs", "2"]
    process = start(command, env)
    wait_for(lambda: all(epochs_done(f) >= 1 for f in folders), process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()  # not communicate(): a job left alive holds the pipes open
    process.stdout.close()
    process.stderr.close()
    assert not left_alive(lambda: group_members(process.pid), 60), "jobs outlived the sweep"
    for folder in folders:  # what the sweep run again takes first (refused if a job held it)
        with locked(folder / LOCK_FILE, wait=False):
            pass
    resumable = {f"resumable from epoch {k}" for k in (1, 2, 3)}  # of 4
    states = dry_run(command)
    assert len(states) == 2 and set(states) <= resumable, states
