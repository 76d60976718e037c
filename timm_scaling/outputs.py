"""Where commands write: ``--output`` checked before anything is trained or measured (a
file given where a folder is asked for, a name too long, a read-only or full disk).

Imports no torch."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from timm_scaling.errors import UserError
from timm_scaling.files import clear_stale_lock
from timm_scaling.report import REPORT_FILE, check_report

# Suffixes of the files our commands write: an --output that does not exist yet and ends in one
# is a file name given where a folder is asked for, not a folder to create.
FILE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".csv", ".json", ".jsonl", ".md", ".txt")


def check_output(
    output: str | os.PathLike, holds: str = f"the run folders and {REPORT_FILE}"
) -> None:
    """``--output`` must be a folder, or not exist yet and not be named like a file; ``holds``
    says what goes into it."""
    path = Path(output)
    long = [part for part in path.absolute().parts if len(os.fsencode(part)) > 255]
    if long:
        raise UserError(
            f"--output has a name over 255 bytes ({long[0][:40]}...), more than a file system "
            "takes: pass a shorter one"
        )
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {output} is a file: pass a folder (it holds {holds})")
    if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        raise UserError(
            f"--output {output} names a file, but --output is a folder (it holds {holds}); "
            f"pass --output {path.with_suffix('')}"
        )
    check_writable(path, "--output")
    report = path / REPORT_FILE
    clear_stale_lock(report.with_name(f".{REPORT_FILE}.lock"))  # a killed writer's
    if REPORT_FILE not in holds or not report.exists():
        return
    if not report.is_file():
        raise UserError(
            f"{report} is not a file: each finished run adds its row there; move it away (or "
            "pass another --output)"
        )
    check_report(report)


def check_writable(folder: Path, option: str) -> None:
    """``folder`` can be made and written to (checked before anything is trained or measured:
    a read-only or full disk, a file on the way, a name too long). Makes nothing: a file is
    written and removed in ``folder``, or in its nearest existing parent."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(existing))
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise UserError(
            f"{option} {folder} cannot be written ({err.strerror or err}): pass a folder you "
            "can write to, or free space there"
        ) from None
