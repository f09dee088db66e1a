"""utils/atomic.py: what appears under a final name is complete, gets the umask's permissions, and a failed or killed
writer leaves the old content plus temporary names that remove_stale_temps clears."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from atoken_diffusers.three_d.gaussians import Gaussians
from atoken_diffusers.three_d.voxelize import save_voxel_features
from atoken_diffusers.utils import atomic
from atoken_diffusers.utils.atomic import (
    atomic_folder,
    atomic_path,
    current_umask,
    publish_folder,
    remove_stale_temps,
    save_atomically,
    shared_temp_folder,
    write_atomically,
)
from atoken_diffusers.utils.media import save_image


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(folder: Path) -> dict[str, bytes | dict]:
    """Everything under ``folder``, names and contents."""
    return {p.name: listing(p) if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


class Boom(RuntimeError):
    pass


def fail(*_):
    raise Boom("the writer failed")


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_files_and_folders_get_the_umask_permissions(tmp_path, umask):
    file_mode, folder_mode = 0o666 & ~umask, 0o777 & ~umask  # 0644/0755 under 022, 0640/0750 under 027
    assert mode(write_atomically(tmp_path / "a.txt", "text")) == file_mode
    assert mode(write_atomically(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"\0"))) == file_mode
    with atomic_folder(tmp_path / "folder") as tmp:
        (tmp / "inner.txt").write_text("x")
        (tmp / "sub").mkdir(mode=0o700)
        save_file({"w": torch.zeros(2)}, tmp / "sub" / "model.safetensors")  # safetensors writes 0600
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "run.sh").chmod(0o700)
    assert mode(tmp_path / "folder") == folder_mode and mode(tmp_path / "folder" / "sub") == folder_mode
    assert mode(tmp_path / "folder" / "inner.txt") == file_mode
    assert mode(tmp_path / "folder" / "sub" / "model.safetensors") == file_mode
    assert mode(tmp_path / "folder" / "run.sh") == folder_mode  # executables stay executable
    assert mode(shared_temp_folder(tmp_path / "shared", create=True)) == folder_mode
    # writers of the package go through the helper (mkstemp alone would leave 0600)
    save_image(torch.zeros(3, 4, 4), tmp_path / "image.png")
    save_voxel_features(tmp_path / "voxels.safetensors", torch.zeros(2, 3), torch.zeros(2, 768))
    ones = torch.ones(1, 3)
    splats = Gaussians(torch.zeros(1, 3), ones, ones * 0.1, torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1, 1) * 0.5)
    for path in (tmp_path / "image.png", tmp_path / "voxels.safetensors", splats.save_ply(tmp_path / "s.ply"),
                 splats.save_splat(tmp_path / "s.splat")):
        assert mode(path) == file_mode, path.name


def test_temporary_file_sits_beside_the_target_with_its_suffix(tmp_path):
    with atomic_path(tmp_path / "sub" / "picture.png") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.suffix == ".png"
        assert tmp.name.startswith(".picture.png.tmp-")
        assert not (tmp_path / "sub" / "picture.png").exists()  # nothing under the final name until the end
        tmp.write_bytes(b"png")
    assert listing(tmp_path / "sub") == {"picture.png": b"png"}


def test_a_failed_write_leaves_the_target_unchanged_and_no_temporary_file(tmp_path):
    target = write_atomically(tmp_path / "data.json", "old")
    with pytest.raises(Boom):
        write_atomically(target, fail)
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half of the new content")
        fail()
    with pytest.raises(Boom):
        write_atomically(tmp_path / "new.json", fail)
    assert listing(tmp_path) == {"data.json": b"old"}


def test_a_folder_replacement_that_fails_midway_keeps_the_old_folder(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        (tmp / "config.json").write_text("old config")
        (tmp / "weights.bin").write_bytes(b"old weights")
    before = listing(tmp_path)
    with pytest.raises(Boom), atomic_folder(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("new config")
        fail()
    with pytest.raises(Boom):
        save_atomically(None, out, overwrite=True, save=fail)
    assert listing(tmp_path) == before
    save_atomically(None, out, overwrite=True, save=lambda d: (d / "config.json").write_text("new config"))
    assert listing(tmp_path) == {"model": {"config.json": b"new config"}}  # replaced whole, no old file left


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"old")
    new = tmp_path / "new"
    new.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == new:
            raise OSError("disk went away")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the two-rename fallback (no renameat2)
    with pytest.raises(OSError, match="disk went away"):
        publish_folder(new, out, overwrite=True)
    assert listing(tmp_path) == {"model": {"weights.bin": b"old"}, "new": {}}


def test_overwrite_false_refuses_an_existing_target(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    message = f"{out} exists; pass overwrite=True \\(--overwrite\\) to replace it."
    with pytest.raises(FileExistsError, match=message), atomic_folder(out):
        pytest.fail("the block must not run")
    with pytest.raises(FileExistsError, match=message):
        save_atomically(None, out, save=lambda d: (d / "x").write_text("x"))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        publish_folder(other, out)
    assert listing(out) == {} and other.is_dir()


def test_shared_temp_folder_has_one_name_for_every_process(tmp_path):
    out = tmp_path / "checkpoint-00000008"
    first = shared_temp_folder(out, create=True)
    (first / "leftover").write_text("from a killed run")
    assert shared_temp_folder(out, create=False) == first and (first / "leftover").exists()  # others only name it
    assert listing(shared_temp_folder(out, create=True)) == {}  # the creating process empties a leftover
    (first / "state.pt").write_bytes(b"state")
    publish_folder(first, out)
    assert listing(tmp_path) == {out.name: {"state.pt": b"state"}}


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from atoken_diffusers.utils.atomic import atomic_folder, atomic_path, write_atomically
folder = Path(sys.argv[1])
write_atomically(folder / "done.txt", "complete")
with atomic_folder(folder / "model") as d, atomic_path(folder / "shard.safetensors") as f:
    (d / "config.json").write_text("half")
    f.write_bytes(b"half a shard")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_remove_stale_temps_clears_what_a_killed_writer_leaves(tmp_path):
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(tmp_path)], capture_output=True)
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    (tmp_path / "keep.txt").write_text("not ours")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("done.txt", "keep.txt"))
    assert len(leftovers) == 2 and all(name.startswith((".model.tmp-", ".shard.safetensors.tmp-")) for name in leftovers)
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == leftovers
    assert listing(tmp_path) == {"done.txt": b"complete", "keep.txt": b"not ours"}
    assert remove_stale_temps(tmp_path / "missing") == []


def test_remove_stale_temps_restores_a_folder_moved_aside_when_the_writer_died(tmp_path):
    # killed between publish_folder's two renames: the old folder is parked, the new one still temporary
    (tmp_path / ".model.tmp-abc123.old" / "model").mkdir(parents=True)
    (tmp_path / ".model.tmp-abc123.old" / "model" / "weights.bin").write_bytes(b"old")
    (tmp_path / ".model.tmp-def456").mkdir()
    remove_stale_temps(tmp_path)
    assert listing(tmp_path) == {"model": {"weights.bin": b"old"}}
