"""The built wheel works on its own: it carries the embedded weights, installs into a fresh virtual environment with
only torch preinstalled (so ``install_requires`` must be complete), and its ``atoken`` command reconstructs a real
photograph from a folder outside the repository.

A fresh venv rather than ``--system-site-packages`` + ``--no-deps``: the latter would reuse the test environment's
packages and so could not catch a dependency missing from setup.cfg, which is the way a wheel most often breaks.
The cost (torch from the local wheel, the rest from the package index or pip's cache) is about a minute, hence
``slow``; the README's test command runs slow tests too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the build this project is tested with (a local CPU wheel on the CI machine)
EMBEDDED = ("atoken-small", "atoken-small-d", "atoken-small-gs")


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked, plus new files not ignored) copied to ``dest``, so the build neither sees
    local build leftovers nor writes build/ and *.egg-info into the working tree other work is using."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files belong to the source")
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # files deleted in the working tree but still tracked are skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _clean_env(venv: Path) -> dict:
    """The environment of a user who activated ``venv``: nothing points back at the repository or the test venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.mark.slow
def test_wheel_installs_and_reconstructs_outside_the_repository(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    # build
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src])
    (wheel,) = dist.glob("atoken_diffusers-*.whl")

    # contents: the embedded weights, bundled configs and the console script
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for model in EMBEDDED:
        for part in ("config.json", "diffusion_pytorch_model.safetensors"):
            assert f"atoken_diffusers/weights/{model}/{part}" in names, f"{model}/{part} missing from {wheel.name}"
    assert any(n.startswith("atoken_diffusers/training/configs/") and n.endswith(".yaml") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    assert re.search(r"^atoken\s*=\s*atoken_diffusers\.cli\.main:entry$", entry_points, re.MULTILINE)

    # a fresh environment: torch first (as the README says), then the wheel with its declared dependencies
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    env = _clean_env(venv)
    _run([python, "-m", "pip", "install", "-q", TORCH], env=env)
    _run([python, "-m", "pip", "install", "-q", wheel], env=env)

    work = tmp_path / "work"  # outside the repository: only the installed package can be imported
    work.mkdir()
    where = _run([python, "-c", "import atoken_diffusers; print(atoken_diffusers.__file__)"], env=env, cwd=work)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    photo = work / "chelsea.png"
    shutil.copy(Path(skimage_data.__file__).parent / "chelsea.png", photo)  # real media, no scikit-image needed there
    result = _run([venv / "bin" / "atoken", "reconstruct", photo.name, "--output", "rec.png"], env=env, cwd=work)
    match = re.search(r"PSNR ([\d.]+) dB", result.stdout)
    assert match and float(match.group(1)) > 20, result.stdout  # the embedded small model, not noise
    assert result.stderr == "", result.stderr  # nothing but the result line
    from PIL import Image

    with Image.open(work / "rec.png") as rec, Image.open(photo) as original:
        assert rec.format == "PNG" and rec.size == original.size
