"""The typer app and what every command shares: one-line errors, recipe overrides, and SIGTERM
and SIGHUP handled as Ctrl-C."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
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
    """Turn a UserError into one line on stderr and its exit code, never a traceback; Ctrl-C
    (130) and SIGTERM (143) into their word, where the command has not said more itself."""

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
        except MemoryError:  # a table too large for this machine's memory
            typer.echo(
                "error: out of memory: this machine's memory cannot hold the input; split it "
                "(frontier: --where or --models), or run it where there is more",
                err=True,
            )
            raise typer.Exit(1) from None
        except OSError as err:  # a full disk, a read-only folder, a name too long, ...
            typer.echo(f"error: {os_error(err)}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as stop:  # a command that keeps nothing half-done (profile)
            typer.echo(stop_word(stop), err=True)
            raise typer.Exit(stop_code(stop)) from None

    return wrapper


# What to do about the file system's usual errors (errno name -> advice); others: the last.
OS_ADVICE = {
    "ENOSPC": "free space",
    "EDQUOT": "free space within your quota",
    "EACCES": "pick a path you can write to, or change its permissions",
    "EPERM": "pick a path you can write to, or change its permissions",
    "EROFS": "pick a path on a writable file system",
    "EEXIST": "move that file away, or pick another path",
    "EISDIR": "a folder is where a file goes: move it away, or pick another path",
    "ENOTDIR": "a file is where a folder goes: move it away, or pick another path",
    "ENAMETOOLONG": "pick a shorter path",
}


def os_error(err: OSError) -> str:
    """An error of the file system as one line: what failed, on which file, and what to do."""
    import errno

    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    advice = OS_ADVICE.get(errno.errorcode.get(err.errno or 0, ""), "check that path")
    return (
        f"{where + ': ' if where else ''}{err.strerror or err}: {advice}, then run the same "
        "command again"
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, what SLURM and Kubernetes send before a kill: handled as Ctrl-C is (the run
    folder keeps its last finished epoch, a sweep stops its jobs, the message says how to go
    on), with exit code 143."""

    signum, word = signal.SIGTERM, "terminated"


class HungUp(Terminated):
    """SIGHUP, what a closed terminal (a dropped ssh connection) sends the commands it ran:
    handled as SIGTERM is, with exit code 129. Where it is ignored (``nohup``) it stays so."""

    signum, word = signal.SIGHUP, "hung up"


def _terminate(signum: int, frame) -> None:
    raise HungUp if signum == signal.SIGHUP else Terminated


def stop_signals() -> list[signal.Signals]:
    """The signals :func:`_terminate` takes over: SIGTERM, and SIGHUP unless it is ignored."""
    return [signal.SIGTERM] + (
        [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL else []
    )


def stop_word(stop: KeyboardInterrupt) -> str:
    return getattr(stop, "word", "interrupted")


def stop_code(stop: KeyboardInterrupt) -> int:
    return 128 + getattr(stop, "signum", signal.SIGINT)
