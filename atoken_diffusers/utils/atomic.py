"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything the project writes (weights folders, checkpoints, shards, manifests, images, videos, splats, logs) goes
through here: the content is written to a temporary name beside the target (``.NAME.tmp-XXXXXX``, plus the target's
suffix for files, so a half-written file never carries the final name and :func:`remove_stale_temps` finds what a
killed writer left) and renamed into place. What appears gets the permissions the process's umask gives ordinary
files and folders (``mkstemp``/``mkdtemp``, and safetensors, alone would leave 0600 / 0700), a replaced file keeps
its permissions, and a replaced folder stays in place until its successor is complete (on Linux the two are swapped
in one ``renameat2(RENAME_EXCHANGE)``, so a kill at any moment leaves one complete folder under the final name).

Temporary names carry the writer's process id (``.NAME.tmp-PID-XXXXXX``), so :func:`remove_stale_temps` can tell a
dead writer's leftovers from a running one's. Live temporaries are recorded in :data:`LIVE_TEMPS`;
:func:`install_interrupt_cleanup` (the ``atoken`` command line calls it) turns SIGTERM/SIGHUP into an exception, so
the ``finally`` blocks here remove them as Ctrl-C already does, and removes any still recorded at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Every temporary name is ``.NAME`` + TEMP_MARK + something; the glob below matches them (and the ``.NAME.tmp-PID``
# names that earlier versions wrote by hand).
TEMP_MARK = ".tmp-"
STALE_GLOB = ".*.tmp*"
SHARED_MARK = "shared"  # the fixed (process-less) name of :func:`shared_temp_folder`

# Temporary files and folders this process is writing now (removed by the exit/signal cleanup if a finally block
# never ran, e.g. in a thread the interrupt did not reach).
LIVE_TEMPS: set[Path] = set()


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


def _temp_prefix(target: Path, with_pid: bool = True) -> str:
    return f".{target.name}{TEMP_MARK}{os.getpid()}-" if with_pid else f".{target.name}{TEMP_MARK}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _live(tmp: Path) -> Iterator[Path]:
    """Record ``tmp`` in :data:`LIVE_TEMPS` while the block runs; remove it (if still there) when the block ends."""
    LIVE_TEMPS.add(tmp)
    try:
        yield tmp
    finally:
        _remove(tmp)
        LIVE_TEMPS.discard(tmp)


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
    to ``path`` when the block succeeds, remove it when it fails. Parent folders are created. A replaced file's
    permissions carry over (reconstructing a 0644 or a private 0600 file in place keeps it so); a new file gets the
    umask's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    with _live(Path(tmp)) as tmp:
        yield tmp
        # after the write: some writers (safetensors) replace the file they are given
        if path.is_file():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        else:
            _apply_umask(tmp, 0o666)
        os.replace(tmp, path)


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
    with _live(Path(tempfile.mkdtemp(prefix=_temp_prefix(output), dir=output.parent))) as tmp:
        yield tmp
        publish_folder(tmp, output, overwrite=overwrite)


def shared_temp_folder(output: str | os.PathLike, create: bool) -> Path:
    """The fixed temporary folder ``.NAME.tmp-shared`` beside ``output``, for a folder that several processes write
    together (each must know the name; random names cannot be shared). Exactly one process passes ``create=True``
    (empties and creates it) and, once all have written, calls :func:`publish_folder`; a leftover from a killed run
    is emptied then, or removed by :func:`remove_stale_temps`."""
    output = Path(output)
    tmp = output.parent / f"{_temp_prefix(output, with_pid=False)}{SHARED_MARK}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with RENAME_EXCHANGE); False where the system or the
    file system cannot (the caller then falls back to two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    rename2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_folder(tmp: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Rename the complete folder ``tmp`` to ``output`` (same parent folder), its content given the umask's
    permissions first. An existing ``output`` raises FileExistsError unless ``overwrite``. An existing folder is
    swapped with ``tmp`` in one step where the system allows (Linux), then deleted: a kill at any moment leaves the old
    or the new folder complete under ``output``. Elsewhere it is moved aside (``.NAME.tmp-PID-XXXXXX.old/NAME``) and
    deleted only after the rename, so a writer killed in between leaves the old folder there, where
    :func:`remove_stale_temps` puts it back; never a mix of old and new files."""
    tmp, output = Path(tmp), Path(output)
    _check_overwrite(output, overwrite)
    _apply_umask_tree(tmp)
    if output.is_dir() and not output.is_symlink() and _exchange(tmp, output):
        _remove(tmp)  # now the old folder
        return output
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


def _writer_alive(temp_name: str) -> bool:
    """Whether the process whose id is in ``temp_name`` (``.NAME.tmp-PID-XXXXXX``) still runs; False for names
    without one (earlier versions) and for this process's finished writes."""
    pid = temp_name.rsplit(TEMP_MARK, 1)[-1].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder`` (``.NAME.tmp-*``); returns them.

    Without ``name``: every temporary name there (call it only where no other writer is running). With ``name``: only
    those of that target, and only when the process that wrote them is gone and this process is not writing them
    (safe while other writers run; what the ``atoken`` commands do before writing an output)."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".{name}{TEMP_MARK}*" if name else STALE_GLOB)) if folder.is_dir() else []
    if name:
        stale = [p for p in stale if p not in LIVE_TEMPS and not p.name.endswith(TEMP_MARK + SHARED_MARK)
                 and not _writer_alive(p.name)]
    for p in stale:
        name = p.name[1:].rsplit(TEMP_MARK, 1)[0]
        if p.name.endswith(".old") and (p / name).exists() and not (folder / name).exists():
            os.replace(p / name, folder / name)  # killed between publish_folder's two renames: restore the old one
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def remove_live_temps() -> None:
    """Remove the temporaries this process is still writing (at exit: a writer interrupted where no finally ran)."""
    for tmp in list(LIVE_TEMPS):
        _remove(tmp)
        LIVE_TEMPS.discard(tmp)


def _raise_on_signal(signum, _frame) -> None:
    # an exception (not death by signal) so that every finally block between here and the top unwinds: temporary
    # files are removed and a folder half-way through publish_folder is put back; exit status 128 + signal as a shell's
    raise SystemExit(128 + signum)


def install_interrupt_cleanup() -> None:
    """For programs (the ``atoken`` command line): SIGTERM and SIGHUP end the process like Ctrl-C does, through the
    finally blocks that remove temporaries, and temporaries still recorded are removed at exit. Handlers a program
    set itself are kept; called off the main thread it only registers the exit cleanup. Idempotent."""
    atexit.unregister(remove_live_temps)  # registered once however often this runs
    atexit.register(remove_live_temps)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_on_signal)
