"""Argument checks shared by the commands: numeric ranges (as argparse types, so a bad value is a usage error before
anything loads) and output paths (the extension decides the format; an output that is an input is refused unless
``--overwrite``; stale temporary files of a killed earlier run are cleared).

No torch here: these run while the parser is built and before any model loads."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import UsageError

SPLAT_OUTPUTS = (".ply", ".splat")  # Gaussians.save_ply / save_splat
VOXEL_OUTPUTS = (".safetensors",)  # three_d.voxelize.save_voxel_features


def output_suffixes(kind: str) -> tuple[str, ...]:
    """The extensions the writer of ``kind`` (image, video, Gaussian splat, voxel-feature) produces; media writers'
    tables are imported here, when a command runs (utils.media needs torch)."""
    if kind in ("image", "video"):
        from ..utils.media import IMAGE_OUTPUT_SUFFIXES, VIDEO_CONTAINERS

        return IMAGE_OUTPUT_SUFFIXES if kind == "image" else tuple(VIDEO_CONTAINERS)
    return {"Gaussian splat": SPLAT_OUTPUTS, "voxel-feature": VOXEL_OUTPUTS}[kind]


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high]; otherwise argparse's one-line usage error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {value}")
        return value

    return parse


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in the interval (``low``/``high`` None: unbounded; ``*_open``: that end
    excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            left = "unbounded" if low is None else f"{'>' if low_open else '>='} {low:g}"
            right = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {left}{right}, got {text}")
        return value

    return parse


POSITIVE_INT = int_at_least(1)
SEED = int_at_least(0, 2**63 - 1)  # torch.Generator.manual_seed's range
PORT = int_at_least(1, 65535)
SIDE = int_at_least(16)  # pixels: at least one 16 x 16 patch
POSITIVE_FLOAT = float_range(0, low_open=True)
GUIDANCE = float_range(1)  # classifier-free guidance: 1 turns it off, below 1 is no guidance at all
ANY_FLOAT = float_range()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(output: str | os.PathLike, kind: str | None, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False, flag: str = "--output", folder: bool = False) -> Path:
    """Refuse a bad output before any work: the wrong extension for ``kind`` (see :func:`output_suffixes`), a folder
    where a file goes (or a file where a folder goes, ``folder=True``), an output that is one of ``inputs`` (same
    file after resolving links) unless ``overwrite``. Then clear the temporary files a killed earlier write of this
    output left behind. Raises :class:`UsageError`; returns the output path."""
    out = Path(output)
    suffixes = output_suffixes(kind) if kind else ("",)
    if folder and out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} is a file; pass a folder name (new, or an existing folder with --overwrite).")
    if not folder and out.is_dir():
        raise UsageError(f"{flag} {out} is a folder; pass a file name inside it, e.g. {out / ('output' + suffixes[0])}.")
    if kind is not None and out.suffix.lower() not in suffixes:
        article = "an" if kind[0] in "aeiou" else "a"
        raise UsageError(f"{flag} {out}: '{out.suffix or '(no extension)'}' is not {article} {kind} format; the "
                         f"extension picks the format, use one of {', '.join(suffixes)}.")
    for source in inputs:
        if source is not None and _same_file(out, Path(source)) and not overwrite:
            raise UsageError(f"{flag} {out} is the input {source}; pick another name, or pass --overwrite to replace "
                             f"the input.")
    from ..utils.atomic import remove_stale_temps

    remove_stale_temps(out.parent, name=out.name)
    return out
