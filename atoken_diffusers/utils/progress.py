"""One progress-bar helper for every long-running entry point (the CLI, dataset encoding, mesh packing).

Bars are tqdm's (what diffusers uses) and write to stderr only when stderr is a terminal: tests, pipes and log files
stay clean, and stdout keeps only results."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", enabled: bool | None = None, leave: bool = False):
    """A tqdm bar over ``iterable`` (or a manual one with ``total`` steps, advanced by ``.update(n)``).

    Args:
        enabled: None (the default) shows the bar only when stderr is a terminal (tqdm's ``disable=None``); False
            never shows it (``atoken --quiet``); True always does.
        leave: keep the finished bar on screen (default: erase it, the result line says what happened).
    Returns:
        the tqdm object; iterate it, or use it as a context manager with ``.update``.
    """
    from tqdm.auto import (
        tqdm,  # deferred: the CLI parser and the package import stay light
    )

    disable = None if enabled is None else not enabled
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=sys.stderr,
                dynamic_ncols=True)
