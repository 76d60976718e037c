"""Model names: the scaling method of ours, the family of timm's, a short label per point.

A timm name is ``architecture.tag``: the tag (after the first ``.``) names the pretrained
weights, that is a training recipe. The family of a name is its architecture without its size
tokens, then the tag: ``tf_efficientnet_b3.in1k`` -> ``tf_efficientnet.in1k``,
``resnet50.tv_in1k`` -> ``resnet.tv_in1k``, ``regnety_016.pycls_in1k`` ->
``regnety.pycls_in1k``, ``convnext_tiny.fb_in1k`` -> ``convnext.fb_in1k``,
``edgenext_xx_small.in1k`` -> ``edgenext.in1k``. So a group is one family scaled under one
recipe. Size tokens, between ``_`` or ``-``: size words (``tiny``, ``small``, ``xlarge``, ``s``,
``m``, one letter), numbers (``016``, ``224``, ``50d``), widths (``32x4d``, ``101x3``, ``w18``,
``26w``), letter-and-number sizes (``b3``, ``l2``, ``xxs24``, ``so400m``), and the digits glued
to a name (``resnet50`` -> ``resnet``, ``resnet50d`` -> ``resnetd``, ``lite0`` -> ``lite``);
never a version (``efficientnetv2``, ``inception_v3``), a patch or window size (``patch16``),
nor the one or two digits of a first word (``eva02``, ``deit3``, ``beit3``).

Imports neither torch nor timm: other modules call :func:`family_of` on report rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pandas as pd

from timm_scaling.errors import UserError
from timm_scaling.scaling import is_model_name, parse_name

OTHER_GROUP = "other"  # rows with no value in the --group column

_SIZE_WORDS = (
    "zepto atto femto pico nano micro mini tiny little small medium mediumd base big large huge "
    "giant gigantic wee pwee betwixt"
)
_SIZE_TOKEN = re.compile(
    r"^(?:x{0,2}(?:" + "|".join(_SIZE_WORDS.split()) + r")"  # tiny, xlarge, xx_small's small
    r"|x{1,2}|x{0,2}[sml]|ti|[a-z]"  # xx (of xx_small), s, xl; one letter (tinynet_a, pit_b)
    r"|\d+[a-z]{0,2}"  # 016 (regnety), 224 (an image size), 50d, 128s, 26w, 4s
    r"|\d+x\d+d?|\d+s\d+x\d+d"  # widths: 32x4d, 101x3, 4s2x40d
    r"|[a-uw-z]{1,2}\d+[a-z]?|xx?s\d+|so\d+m\d*|\d+m"  # b3, l2, w18, xxs24, so400m, 21m; not v2
    r")$"
)
_GLUED = re.compile(r"^(?P<stem>[a-z][a-z0-9]*?[a-uw-z])(?P<digits>\d+)(?P<suffix>[a-z]{0,3})$")
_KEPT_STEMS = ("patch", "window")  # patch16, window12: a design, not a size


def _without_digits(token: str, first: bool) -> str:
    """``resnet50`` -> ``resnet``, ``resnet50d`` -> ``resnetd``, ``lite0`` -> ``lite``."""
    match = _GLUED.match(token)
    if match is None or match["stem"] in _KEPT_STEMS:
        return token
    if first and (len(match["digits"]) < 2 or match["digits"].startswith("0")):
        return token  # eva02, deit3: a generation, not a size
    return match["stem"] + match["suffix"]


def _split(name: str) -> tuple[list[str], list[str], str]:
    """Tokens of the architecture, the separator before each, and the tag ('' if none)."""
    arch, _, tag = name.partition(".")
    tokens = re.split(r"[_-]", arch)
    return tokens, ["", *re.findall(r"[_-]", arch)], tag


def family_of(name: str, tag: bool = True) -> str:
    """The family of a timm model name: its architecture without size tokens, then ``.tag``
    (module docstring); ``tag=False`` leaves the tag out (``--group family``)."""
    tokens, seps, pretrained = _split(name.strip())
    kept = [(seps[0], _without_digits(tokens[0], True))]
    kept += [
        (sep, _without_digits(token, False))
        for sep, token in zip(seps[1:], tokens[1:], strict=True)
        if not _SIZE_TOKEN.match(token)
    ]
    family = "".join(sep + token for sep, token in kept)
    return f"{family}.{pretrained}" if tag and pretrained else family


def _size_text(name: str) -> str:
    """What a name adds to its family: ``b3``, ``xx_small``, ``resnet50``; else the name."""
    tokens, seps, _ = _split(name)
    family = family_of(name, tag=False)
    if re.split(r"[_-]", family)[0] != tokens[0]:
        return name.partition(".")[0]  # resnet50: the family's word itself carries the size
    kept = set(re.split(r"[_-]", family))
    parts = [sep + token for sep, token in zip(seps, tokens, strict=True) if token not in kept]
    return "".join(parts).lstrip("_-") or name.partition(".")[0]


def method_of(model: str) -> str:
    """Our names: their scaling method (baseline, depth, ..., mixed); others: their family."""
    if is_model_name(model):
        try:
            return parse_name(model).method
        except UserError:
            pass  # matches the grammar but is not canonical (e.g. a multiplier of 1)
    return family_of(model)


def _multiplier_text(depth: float, width: float, resolution: float) -> str:
    parts = [
        f"{axis}={value:g}"
        for axis, value in (("d", depth), ("w", width), ("r", resolution))
        if not math.isclose(value, 1.0)
    ]
    return " ".join(parts)


MULTIPLIER_COLUMNS = ("depth_mult", "width_mult", "res_mult")


def label_of(model: str, row: Mapping[str, object]) -> str:
    """A short label for a point: its multipliers, else what its name adds to its family."""
    if is_model_name(model):
        try:
            scaling = parse_name(model)
        except UserError:
            scaling = None
        if scaling is not None:
            if scaling.coefficients is not None:
                return f"φ={scaling.coefficients.phi:g}"
            return _multiplier_text(scaling.depth, scaling.width, scaling.resolution) or "B0"
    mults = []
    for column in MULTIPLIER_COLUMNS:
        try:
            value = float(row.get(column, 1.0))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = 1.0
        mults.append(1.0 if math.isnan(value) else value)
    return _multiplier_text(*mults) or _size_text(model)


def assign_groups(rows: pd.DataFrame, group: str) -> pd.Series:
    """The group of each row: the ``group`` column, with ``method`` read from names if absent;
    ``family``, if no such column, is the family of the name without its tag."""
    if group in rows.columns:
        values = rows[group].astype("string").str.strip()
        missing = values.isna() | (values == "")
        if group == "method" and missing.any():
            values[missing] = rows.loc[missing, "model"].map(method_of).astype("string")
        return values.fillna(OTHER_GROUP).replace("", OTHER_GROUP).astype(str)
    if group == "method":
        return rows["model"].map(method_of).astype(str)
    if group == "family":
        return rows["model"].map(lambda name: family_of(name, tag=False)).astype(str)
    raise UserError(
        f"no {group!r} column to group by in the input; pass --group method, family or one of: "
        f"{', '.join(c for c in rows.columns if c not in ('source', 'line'))}"
    )
