"""The YAML files of recipes and sweeps: a name or path to its file, and its `key: value`
mapping read with one-line errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from timm_scaling.errors import UserError

SUFFIXES = (".yaml", ".yml")


def find_file(
    name_or_path: str, folders: Sequence[Path], kind: str, available: Sequence[str], where=""
) -> Path:
    """A name or path argument to its .yaml file: a path as given, else ``<folder>/<name>.yaml``
    in the first of ``folders`` that has it; a one-line error (after ``where``, the file that
    named it) with the nearest of ``available`` and all of them if none."""
    candidate = Path(name_or_path).expanduser()
    choices = f"a built-in {kind} ({', '.join(available)}) or the path of a .yaml file"
    if candidate.suffix in SUFFIXES or len(candidate.parts) > 1:
        if candidate.is_file():
            return candidate
        raise UserError(f"{where}{kind} file {name_or_path} not found; pass {choices}")
    for folder in folders:
        for suffix in SUFFIXES:
            if (folder / f"{name_or_path}{suffix}").is_file():
                return folder / f"{name_or_path}{suffix}"
    near = difflib.get_close_matches(name_or_path, available, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise UserError(f"{where}unknown {kind} {name_or_path!r}{hint}; pass {choices}")


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's parser where PyYAML has it (about four times
    faster: a sweep, `collect` and `curves` read the recipe of every run folder)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_mapping(path: Path) -> dict[str, Any]:
    """The file's ``key: value`` lines (an empty file: none); a one-line error for a file not
    readable, not YAML (naming the line) or not a mapping."""
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}; write one `key: value` a line") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text (byte {err.start}): a damaged file, or another encoding; "
            "save it as UTF-8"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected `key: value` lines, got a {type(data).__name__}")
    return dict(data)
