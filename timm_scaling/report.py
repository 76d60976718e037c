"""The report.csv schema: one row per finished run, written atomically; ours or timm's CSVs read.

Column names follow timm's own results CSVs where timm has the column (model, img_size, top1,
top5, param_count in millions, gmacs), so the frontier reads timm's published results too.
MACs are multiply-accumulates (the paper's "FLOPS"); gflops is calflops' own FLOP count.

Imports no torch, timm or pandas: the trainer appends rows with it, the frontier reads with it.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from timm_scaling.errors import InputError, UserError
from timm_scaling.files import atomic_write, writers_lock

log = logging.getLogger(__name__)

REPORT_FILE = "report.csv"  # in each --output of train and sweep: a row per finished run
COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "depth_mult",
    "width_mult",
    "res_mult",
    "img_size",
    "param_count",
    "gmacs",
    "gflops",
    "macts",
    "top1",
    "top5",
    "dataset",
    "epochs",
    "seed",
    "recipe",
    "train_time_s",
    "train_samples_per_sec",
    "peak_mem_mb",
    "device",
    "version",
    # timm.create_model's extra arguments, as JSON with sorted keys; empty for none
    "model_kwargs",
)
# The header of reports written before model_kwargs was a column: read, and upgraded on write.
LEGACY_COLUMNS: tuple[str, ...] = COLUMNS[:-1]

# What names a run's folder (<recipe>-<model>-s<seed>[-k<hash of model_kwargs>]): a report
# holds one row per run.
RUN_KEY: tuple[str, ...] = ("recipe", "model", "model_kwargs", "seed")


class Metric(NamedTuple):
    column: str
    label: str
    unit: str
    higher_is_better: bool


# One table drives the frontier's axes, the plot's labels and the report's headers.
METRICS: dict[str, Metric] = {
    m.column: m
    for m in (
        Metric("gmacs", "MACs", "GMACs", False),
        Metric("gflops", "FLOPs", "GFLOPs", False),
        Metric("param_count", "Parameters", "M", False),
        Metric("macts", "Activations", "M", False),
        Metric("infer_samples_per_sec", "Inference throughput", "samples/s", True),
        Metric("train_samples_per_sec", "Training throughput", "samples/s", True),
        Metric("train_time_s", "Training time", "s", False),
        Metric("peak_mem_mb", "Peak memory", "MB", False),
        Metric("top1", "Top-1 accuracy", "%", True),
        Metric("top5", "Top-5 accuracy", "%", True),
    )
}

# Other names for our columns in timm's results CSVs (results-imagenet.csv, benchmark CSVs).
ALIASES: dict[str, tuple[str, ...]] = {
    "gmacs": ("infer_gmacs", "gmac"),
    "macts": ("infer_macts",),
    "param_count": ("params", "param_count_m"),
    "img_size": ("infer_img_size", "input_size"),
}


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _row_text(row: Mapping[str, object], header: bool) -> str:
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        allowed = ", ".join(COLUMNS)
        raise UserError(f"report row has unknown column(s) {unknown}; allowed: {allowed}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerow([_format(row.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def check_report(path: Path) -> None:
    """A report.csv already at ``path`` is ours and whole (checked before a run trains: a
    foreign or damaged one refused the run's row only once the whole run had trained)."""
    text = read_report(path)
    if text:
        _check_header(path, text)
        parse_rows(path, text, keep=False)


DAMAGED_SUFFIX = ".damaged"


class Damaged(InputError):
    """Our report, damaged: bytes that are not UTF-8, or a row cut short. ``collect`` rebuilds
    it from the runs' result.json files, keeping the damaged file aside."""

    def __init__(self, path: Path, why: str, fix: str = "") -> None:
        self.why = f"{path} {why}"
        super().__init__(
            f"{self.why}: {fix}`timm-scaling collect {path.parent}` rebuilds it from the runs' "
            f"result.json files (keeping this file as {path.name}{DAMAGED_SUFFIX})"
        )


def read_report(path: Path) -> str:
    """The report's text ("" where absent); bytes that are not UTF-8 are :class:`Damaged`."""
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else ""
    except UnicodeDecodeError as err:
        raise Damaged(path, f"is damaged (byte {err.start} is not UTF-8 text)") from None


def _check_header(path: Path, text: str) -> None:
    if not text.strip():
        raise Damaged(path, "is empty (not even its header)")
    first = text.split("\n", 1)[0]
    if first == text and ",".join(COLUMNS).startswith(first):  # no line ended: a write cut
        raise Damaged(path, f"is cut short in its header (after {len(text)} bytes)")
    if not is_ours(first):
        raise UserError(
            f"{path} is not a timm-scaling report (its header differs from ours): move it "
            "away or write to another --output (`timm-scaling collect "
            f"{path.parent} --prune` replaces it with the rows of the runs there)"
        )


def parse_rows(path: Path, text: str, keep: bool = True) -> list[dict[str, str]]:
    """The rows of our report ``text`` (read from ``path``; none kept, only checked, if not
    ``keep``); a row of too few or too many fields (a write cut short, a hand edit) is
    :class:`Damaged`, naming its line, never a row of blanks."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise Damaged(
                path,
                f"line {reader.line_num} has {len(fields)} of {len(header)} fields (a row cut "
                "short?)",
                "delete that line, or ",
            )
        if keep:
            rows.append(dict(zip(header, fields, strict=True)))
    return rows


def is_ours(header: str) -> bool:
    """Whether a CSV's first line is our report's header (this version's or the one before)."""
    return header.strip() in (",".join(COLUMNS), ",".join(LEGACY_COLUMNS))


def put_row(path: str | os.PathLike, row: Mapping[str, object]) -> None:
    """Add one run's row to ``path``, replacing the row of the same run (its ``RUN_KEY``: the
    run folder), atomically and under a file lock.

    A run trained again has one row, its last; two runs finishing at once both land; a crash
    mid-write leaves the old file intact.
    """
    put_rows(path, [row])


def put_rows(path: str | os.PathLike, rows: Sequence[Mapping[str, object]]) -> None:
    """:func:`put_row` for several runs' rows in one write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {run_key(row) for row in rows}
    with writers_lock(path):
        old = read_report(path)
        if old:
            _check_header(path, old)
        kept = [r for r in parse_rows(path, old) if run_key(r) not in keys]
        every = [*kept, *rows]
        atomic_write(path, "".join(_row_text(r, header=i == 0) for i, r in enumerate(every)))


def run_key(row: Mapping[str, object]) -> tuple[str, ...]:
    """The run a row (written, or read back as strings) belongs to: its RUN_KEY as written."""
    return tuple(_format(row.get(column)) for column in RUN_KEY)


def missing_rows(
    path: str | os.PathLike, rows: Sequence[Mapping[str, object]]
) -> list[Mapping[str, object]]:
    """The ``rows`` that the report ``path`` does not hold as :func:`put_row` writes them
    (the report read once)."""
    path = Path(path)
    if not path.is_file():
        return list(rows)
    text = read_report(path)
    _check_header(path, text)
    held = {tuple(r.get(c, "") for c in COLUMNS) for r in parse_rows(path, text)}
    return [row for row in rows if tuple(_format(row.get(c)) for c in COLUMNS) not in held]


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> int:
    """Replace ``path`` with exactly these rows (atomically); returns the row count."""
    rows = list(rows)
    return rewrite_rows(path, lambda old: rows, read=False)


def rewrite_rows(
    path: str | os.PathLike,
    new_rows: Callable[[list[dict[str, str]]], Iterable[Mapping[str, object]]],
    read: bool = True,
    aside: bool = False,
) -> int:
    """Replace ``path`` with ``new_rows(its rows now)`` (``[]`` if absent, or if not ``read``),
    atomically and under the writers' lock held from the read to the write: a row that
    :func:`put_row` adds meanwhile is either among the rows read or added after, never
    overwritten. With ``aside``, a :class:`Damaged` file is renamed ``<name>.damaged`` (a
    warning says so) and counts as no rows. Returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writers_lock(path):
        damaged = None
        try:
            old = read_report(path) if read else ""
            if old:
                _check_header(path, old)
            rows = parse_rows(path, old)
        except Damaged as err:
            if not aside:
                raise
            damaged, rows = err, []
        rows = list(new_rows(rows))
        if damaged is not None:  # the new rows are made: the damaged file steps aside
            kept = _free_name(path.with_name(path.name + DAMAGED_SUFFIX))
            os.replace(path, kept)
            log.warning(f"{damaged.why}: kept as {kept}; rebuilt from the runs")
        text = "".join(_row_text(row, header=i == 0) for i, row in enumerate(rows))
        atomic_write(path, text or ",".join(COLUMNS) + "\n")
    return len(rows)


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... the first that does not exist."""
    number = 1
    while (candidate := path if number == 1 else path.with_name(f"{path.name}-{number}")).exists():
        number += 1
    return candidate


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a report.csv as dicts of strings (no pandas needed)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a report.csv written by `timm-scaling train`")
    text = read_report(path)
    _check_header(path, text)
    return parse_rows(path, text)
