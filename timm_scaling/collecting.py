"""``timm-scaling collect``: rebuild a report.csv from the result.json of finished run folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from timm_scaling.errors import UserError
from timm_scaling.report import rewrite_rows, run_key
from timm_scaling.runs import RESULT_FILE, read_result, report_row, run_folder


def collect(
    runs: str | os.PathLike,
    output: str | os.PathLike,
    recipes: Iterable | None = None,
    prune: bool = False,
) -> int:
    """Rebuild ``output`` (a report.csv) from every result.json under ``runs``, or from the run
    folders of ``recipes`` only (those finished); returns the number of rows.

    With no finished run under ``runs`` it is an error; so is dropping rows of an existing
    report (runs whose folders are gone, or another folder's runs) unless ``prune``. The run
    folders are read under the report's lock: a run that finishes meanwhile (a sweep beside
    it) is either collected or adds its row after, never lost."""
    runs = Path(runs)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a folder: pass the --output folder of `timm-scaling train`")

    def rebuilt(old: list[dict[str, str]]) -> list[dict]:
        if recipes is None:
            paths = sorted(runs.rglob(RESULT_FILE))
            if not paths:
                raise UserError(
                    f"{runs} holds no finished run (no {RESULT_FILE} under it): pass the "
                    "--output folder of `timm-scaling train` or `sweep`"
                )
        else:
            paths = [run_folder(runs, r) / RESULT_FILE for r in recipes]
        rows = [report_row(result) for result in results(paths)]
        keys = {run_key(r) for r in rows}
        lost = [r for r in old if run_key(r) not in keys]
        if lost:
            names = ", ".join(f"{r['model']} s{r['seed']}" for r in lost[:3])
            raise UserError(
                f"{output} has {len(lost)} row(s) with no finished run under {runs} ({names}"
                f"{', ...' * (len(lost) > 3)}); collect would drop them: pass --prune to drop "
                "them, or --output another file"
            )
        return rows

    return rewrite_rows(output, rebuilt, read=not prune, aside=True)


def results(paths: Iterable[Path]) -> list[dict]:
    """The result.json of each path that exists."""
    return [read_result(path) for path in paths if path.exists()]
