"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the project writes (weights folders, checkpoints, shards, manifests, images, videos, splats, logs) goes
through here: the content is written to a temporary name beside the target (``.NAME.tmp-XXXXXX``, plus the target's
suffix for files, so a half-written file never carries the final name and :func:`remove_stale_temps` finds what a
killed writer left) and renamed into place. What appears gets the permissions the process's umask gives ordinary
files and folders (``mkstemp``/``mkdtemp``, and safetensors, alone would leave 0600 / 0700), and a replaced folder
stays in place until its successor is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Every temporary name is ``.NAME`` + TEMP_MARK + something; the glob below matches them (and the ``.NAME.tmp-PID``
# names that earlier versions wrote by hand).
TEMP_MARK = ".tmp-"
STALE_GLOB = ".*.tmp*"


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


def _temp_prefix(target: Path) -> str:
    return f".{target.name}{TEMP_MARK}"


def _apply_umask(path: Path, mode: int, umask: int | None = None) -> None:
    """Give ``path`` the permissions open()/mkdir() would have given it (``mode`` 0o666 or 0o777, less the umask)."""
    os.chmod(path, mode & ~(current_umask() if umask is None else umask))


def _apply_umask_tree(folder: Path) -> None:
    """:func:`_apply_umask` to a folder and everything in it; executables keep their execute bits."""
    umask = current_umask()
    _apply_umask(folder, 0o777, umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            _apply_umask(Path(root, name), 0o777, umask)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                _apply_umask(path, 0o777 if path.stat().st_mode & stat.S_IXUSR else 0o666, umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffix, so writers that go by the extension work); rename it
    to ``path`` when the block succeeds, remove it when it fails. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _apply_umask(tmp, 0o666)  # after the write: some writers (safetensors) replace the file they are given
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


def _check_overwrite(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``output``; when the block succeeds it becomes ``output``
    (:func:`publish_folder`), when it fails it is deleted.

    An existing ``output`` raises FileExistsError unless ``overwrite``, checked before the block runs.
    """
    output = Path(output)
    _check_overwrite(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(output), dir=output.parent))
    try:
        yield tmp
        publish_folder(tmp, output, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shared_temp_folder(output: str | os.PathLike, create: bool) -> Path:
    """The fixed temporary folder ``.NAME.tmp-shared`` beside ``output``, for a folder that several processes write
    together (each must know the name; random names cannot be shared). Exactly one process passes ``create=True``
    (empties and creates it) and, once all have written, calls :func:`publish_folder`; a leftover from a killed run
    is emptied then, or removed by :func:`remove_stale_temps`."""
    output = Path(output)
    tmp = output.parent / f"{_temp_prefix(output)}shared"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def publish_folder(tmp: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Rename the complete folder ``tmp`` to ``output`` (same parent folder), its content given the umask's
    permissions first. An existing ``output`` raises FileExistsError unless ``overwrite``; it is moved aside
    (``.NAME.tmp-XXXXXX.old/NAME``) and deleted only after the rename, so a writer killed in between leaves the old
    folder there, where :func:`remove_stale_temps` puts it back; never a mix of old and new files."""
    tmp, output = Path(tmp), Path(output)
    _check_overwrite(output, overwrite)
    _apply_umask_tree(tmp)
    old = None
    try:
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(output), suffix=".old", dir=output.parent))
            os.replace(output, old / output.name)
        os.replace(tmp, output)
    finally:
        if old is not None:
            if not output.exists():  # the rename failed: put the old folder back
                os.replace(old / output.name, output)
            shutil.rmtree(old, ignore_errors=True)
    return output


def save_atomically(model, output: str | os.PathLike, overwrite: bool = False, save=None) -> Path:
    """``model.save_pretrained`` (a diffusers model or pipeline; safetensors), or ``save(folder)`` when given, into
    ``output`` atomically (:func:`atomic_folder`)."""
    with atomic_folder(output, overwrite=overwrite) as tmp:
        if save is not None:
            save(tmp)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
    return Path(output)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder`` (``.NAME.tmp-*``); returns them.
    Call it only where no other writer is running."""
    folder = Path(folder)
    stale = sorted(folder.glob(STALE_GLOB)) if folder.is_dir() else []
    for p in stale:
        name = p.name[1:].rsplit(TEMP_MARK, 1)[0]
        if p.name.endswith(".old") and (p / name).exists() and not (folder / name).exists():
            os.replace(p / name, folder / name)  # killed between publish_folder's two renames: restore the old one
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale
