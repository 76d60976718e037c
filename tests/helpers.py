"""Helpers of several test modules (pytest puts tests/ on the path)."""

from __future__ import annotations

from timm_scaling.recipes import Recipe, load_recipe


def recipe(name: str = "digits", /, **settings) -> Recipe:
    """A built-in recipe with ``key=value`` overrides, as ``--set`` gives them."""
    return load_recipe(name, [f"{key}={value}" for key, value in settings.items()])
