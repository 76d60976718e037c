"""YAML values checked against Python type hints (``int``, ``float | None``, ``Literal``,
``list[float]``, ``dict[str, Any]``), and the hints said in words for a one-line error."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal


def union(hint: Any) -> tuple[Any, ...]:
    """The members of ``A | B`` (``Literal[...] | None`` is a typing.Union), else ()."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return ()


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if union(hint):
        return " or ".join("null" if a is type(None) else type_name(a) for a in union(hint))
    if typing.get_origin(hint) is dict:
        return "a mapping of names to values, e.g. {output_stride: 8}"
    if typing.get_origin(hint) is list:
        return "a list, e.g. [0.08, 1.0]"
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    return names.get(hint, hint.__name__)


def conforms(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is dict:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if union(hint):
        return any(conforms(value, arg) for arg in union(hint))
    if hint is type(None):
        return value is None
    if hint is float:  # YAML reads 1 as an int and 1e-5 as a string: accept both as floats
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or is_float(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def is_float(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
