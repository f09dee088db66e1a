"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the project writes (weights folders, checkpoints, shards, manifests, images, videos, splats, logs) goes
through here: the content is written to a temporary name beside the target (``.NAME.XXXXXX.tmp``, so a half-written
file never carries the final name and a stale one is easy to find) and renamed into place. Temporary files are
created with the permissions the process's umask gives ordinary files (``mkstemp``/``mkdtemp`` alone would give 0600
/ 0700), and a replaced folder stays in place until its successor is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask alone must set it to read it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_name(target: Path) -> str:
    return f".{target.name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffix, so writers that go by the extension work); rename it
    to ``path`` when the block succeeds, remove it when it fails. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(path), suffix=TEMP_SUFFIX + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomically(path: str | os.PathLike, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes the temporary path it is given) to ``path``."""
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``output``; when the block succeeds it becomes ``output``.

    An existing ``output`` raises FileExistsError unless ``overwrite``; it is replaced only once the new folder is
    complete (moved aside, the new one renamed in, then the old one deleted), so a killed writer leaves the old or
    the new folder, never a mix.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(output), suffix=TEMP_SUFFIX, dir=output.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_name(output), suffix=".old" + TEMP_SUFFIX, dir=output.parent))
            os.replace(output, old / output.name)
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def save_atomically(model, output: str | os.PathLike, overwrite: bool = False, save=None) -> Path:
    """``model.save_pretrained`` (safetensors), or ``save(folder)`` when given, into ``output`` atomically
    (:func:`atomic_folder`)."""
    with atomic_folder(output, overwrite=overwrite) as tmp:
        if save is not None:
            save(tmp)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
    return Path(output)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files/folders a killed writer left in ``folder`` (``.NAME.XXXXXX.tmp*``); returns them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*" + TEMP_SUFFIX + "*")] if folder.is_dir() else []
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale
