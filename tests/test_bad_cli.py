"""Hostile and careless use of the `atoken` command line: every bad argument, path or file gets one line on stderr and
exit status 2 (usage) or 1 (failure), nothing is written or left behind, output formats follow the extension, and a
killed writer leaves complete files and folders (issue "Hardened edges", items 4-6)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from atoken_diffusers.cli.errors import CommandError, run_command
from atoken_diffusers.cli.main import main
from atoken_diffusers.utils.atomic import remove_stale_temps
from atoken_diffusers.utils.media import save_image, save_video
from tests.conftest import PARITY, real_image

SMALL = str(Path(__file__).resolve().parents[1] / "atoken_diffusers" / "weights" / "atoken-small")


def listing(folder: Path) -> dict[str, bytes | dict]:
    return {p.name: listing(p) if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture()
def inputs(tmp_path) -> Path:
    """A folder with a real image, a real video, a text file dressed as media, a mesh name and an existing folder."""
    save_image(real_image(32, 48), tmp_path / "in.png")
    save_video(real_image(32, 32)[:, :, None].repeat(1, 1, 4, 1, 1), tmp_path / "in.mp4", fps=4)
    for name in ("bad.png", "bad.mp4", "t.txt", "bad.obj"):
        (tmp_path / name).write_text("not what the name says")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    return tmp_path


# (argv with {d} for the inputs folder, exit status, regex the one stderr line must match)
CASES = [
    # output format follows the extension; unknown extensions are refused before anything loads
    ("reconstruct {d}/in.png --output {d}/o.xyz", 2, r"--output .*o\.xyz: '\.xyz' is not an image format.*\.png, \.jpg"),
    ("reconstruct {d}/in.png --output {d}/o.mp4", 2, r"'\.mp4' is not an image format"),
    ("reconstruct {d}/in.mp4 --output {d}/o.png", 2, r"'\.png' is not a video format.*\.mp4, \.m4v, \.mov, \.mkv"),
    ("reconstruct {d}/in.mp4 --output {d}/o.gif", 2, r"'\.gif' is not a video format"),
    ("reconstruct {d}/in.png --output {d}/o", 2, r"'\(no extension\)' is not an image format"),
    ("pack-3d {d}/bad.obj --output {d}/x.txt", 2, r"'\.txt' is not a voxel-feature format.*\.safetensors"),
    ("generate image --pipeline {d}/p --out {d}/x.mp4", 2, r"--out .*x\.mp4: '\.mp4' is not an image format"),
    ("generate video --pipeline {d}/p --prompt a --out {d}/x.png", 2, r"'\.png' is not a video format"),
    ("generate 3d {d}/in.png --pipeline {d}/p --out {d}/x.obj", 2, r"not a Gaussian splat format.*\.ply, \.splat"),
    # an output that is an input, or a folder where a file goes (and the reverse)
    ("reconstruct {d}/in.png --output {d}/in.png", 2, r"--output .*in\.png is the input .*--overwrite"),
    ("reconstruct {d}/in.png --output {d}/./../{n}/in.png", 2, r"is the input"),
    ("reconstruct {d}/in.png --output {d}/folder", 2, r"--output .*folder is a folder; pass a file name"),
    ("convert --checkpoint {d}/t.txt --config {d}/t.txt --output {d}/t.txt --overwrite", 2, r"--output .*t\.txt is a file"),
    ("convert --checkpoint {d}/t.txt --config {d}/t.txt --output {d}/folder", 2, r"folder exists; pass --overwrite"),
    ("export --output {d}/t.txt", 2, r"--output .*t\.txt is a file; pass a folder"),
    # numeric ranges of every command
    ("reconstruct {d}/in.png --output {d}/o.png --max-frames 0", 2, r"argument --max-frames: must be an integer >= 1, got 0"),
    ("reconstruct {d}/in.png --output {d}/o.png --max-frames -5", 2, r"--max-frames: must be an integer >= 1, got -5"),
    ("reconstruct {d}/in.png --output {d}/o.png --views 0", 2, r"--views: must be an integer >= 1"),
    ("reconstruct {d}/in.png --output {d}/o.png --eval-views x", 2, r"--eval-views: 'x' is not an integer"),
    ("pack-3d {d}/bad.obj --output {d}/x.safetensors --views 0", 2, r"--views: must be an integer >= 1"),
    ("classify {d}/in.png --labels a --model m --text-model t --top-k 0", 2, r"--top-k: must be an integer >= 1"),
    ("classify {d}/in.png --labels a --model m --text-model t --max-frames 0", 2, r"--max-frames: must be"),
    ("demo --port 70000", 2, r"--port: must be an integer from 1 to 65535, got 70000"),
    ("demo --max-upload-mb nan", 2, r"--max-upload-mb: must be a finite number > 0, got nan"),
    ("demo --max-video-seconds -1", 2, r"--max-video-seconds: must be a finite number > 0"),
    ("demo --max-image-side 8", 2, r"--max-image-side: must be an integer >= 16, got 8"),
    ("export --output {d}/ex --size 8", 2, r"--size: must be an integer >= 16"),
    ("export --output {d}/ex --size 24 --model " + SMALL, 2, r"--size: size 24 must be a positive multiple of 16"),
    ("encode-dataset {d} --model m --out {d}/s --shard-size 0", 2, r"--shard-size: must be an integer >= 1"),
    ("encode-dataset {d} --model m --out {d}/s --resolution 0", 2, r"--resolution: must be an integer >= 16"),
    ("latent-stats {d} --model m --batch-size -1", 2, r"--batch-size: must be an integer >= 1, got -1"),
    ("generate image --pipeline p --out {d}/x.png --steps 0", 2, r"--steps: must be an integer >= 1"),
    ("generate image --pipeline p --out {d}/x.png --guidance 0.5", 2, r"--guidance: must be a finite number >= 1"),
    ("generate image --pipeline p --out {d}/x.png --top-p 1.5", 2, r"--top-p: must be a finite number > 0 and <= 1"),
    ("generate image --pipeline p --out {d}/x.png --temperature -1", 2, r"--temperature: must be a finite number >= 0"),
    ("generate image --pipeline p --out {d}/x.png --seed -1", 2, r"--seed: must be an integer from 0 to"),
    ("generate image --pipeline p --out {d}/x.png --class-id -3", 2, r"--class-id: must be an integer >= 0"),
    ("generate video --pipeline p --prompt a --out {d}/x.mp4 --fps 0", 2, r"--fps: must be a finite number > 0"),
    ("generate video --pipeline p --prompt a --out {d}/x.mp4 --num-frames 0", 2, r"--num-frames: must be"),
    ("generate 3d {d}/in.png --pipeline p --out {d}/x.ply --threshold inf", 2, r"--threshold: must be a finite number"),
    ("train-generator dit --lr 0", 2, r"--lr: must be a finite number > 0"),
    ("train tiny_stage1 --max-steps 0", 2, r"--max-steps: must be an integer >= 1"),
    # other usage errors: named flag, one line
    ("nosuch", 2, r"atoken: error: argument command: invalid choice: 'nosuch'"),
    ("reconstruct {d}/missing.png --output {d}/o.png", 2, r"input: '.*missing\.png' is neither a file nor bundled media"),
    ("reconstruct {d}/in.png --output {d}/o.png --device banana", 2, r"--device banana: not a device name; use cpu"),
    ("reconstruct {d}/in.png --output {d}/o.png --device cuda:7", 2, r"--device cuda:7: this machine has .*--device cpu"),
    ("reconstruct {d}/in.png --output {d}/o.png --model {d}/nothere", 2, r"--model .*nothere does not exist"),
    ("reconstruct {d}/in.png --output {d}/o.png --discrete --model " + SMALL, 2, r"--discrete: .*has no FSQ quantizer"),
    ("classify {d}/in.png --labels ' , ' --model m --text-model t", 2, r"--labels is empty"),
    ("generate image --pipeline p --out {d}/x.png --class-id 1 --class-name a", 2, r"--class-id or --class-name, not both"),
    ("generate image --pipeline {d}/folder --out {d}/x.png", 2, r"--pipeline .*folder: no model_index\.json"),
    ("selftest --fixtures {d}/nothere", 2, r"--fixtures .*nothere: no atoken\.pt there"),
    ("demo --gs-decoder {d}/nothere", 2, r"--gs-decoder .*nothere: not a converted folder"),
    ("latent-stats {d} --model {d}/nothere", 2, r"--model .*nothere: no config\.json"),
    # failures found while working: a file that is not what its name says (exit 1, named, no traceback)
    ("reconstruct {d}/bad.png --output {d}/o.png", 1, r"atoken reconstruct: .*bad\.png is not a readable image .*PNG"),
    ("reconstruct {d}/bad.mp4 --output {d}/o.mp4", 1, r"bad\.mp4 is not a readable video .*MP4"),
    ("pack-3d {d}/missing.obj --output {d}/x.safetensors", 1, r"atoken pack-3d: mesh file .*missing\.obj' does not exist"),
    ("pack-3d {d}/bad.obj --output {d}/x.safetensors", 1, r"atoken pack-3d: mesh file .*bad\.obj' holds no triangle mesh"),
    ("pack-3d {d}/t.txt --output {d}/x.safetensors", 1, r"atoken pack-3d: mesh file .*t\.txt' could not be read"),
    ("convert --checkpoint {d}/t.txt --config {d}/t.txt --output {d}/o", 1, r"t\.txt could not be loaded as a weights-only"),
    ("convert --gs-decoder {d}/t.txt --config {d}/t.txt --output {d}/o", 1, r"t\.txt is not a Gaussian decoder config"),
]


@pytest.mark.parametrize(("argv", "status", "message"), CASES, ids=[c[0][:60] for c in CASES])
def test_a_bad_command_answers_in_one_line_and_writes_nothing(argv, status, message, inputs, capfd):
    before = listing(inputs)
    capfd.readouterr()
    with pytest.raises(SystemExit) as done:
        main(shlex.split(argv.format(d=inputs, n=inputs.name)))
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]
    assert done.value.code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert listing(inputs) == before  # nothing written, truncated or left behind


def test_the_count_of_cases():
    assert len(CASES) >= 50


# ---------------------------------------------------------------- one line for every failure, traceback on --debug

@pytest.mark.parametrize(("error", "status", "message"), [
    (RuntimeError("boom\nsecond line"), 1, r"^atoken x: unexpected RuntimeError: boom second line \(rerun with --debug"),
    (KeyError("weights"), 1, r"unexpected KeyError: 'weights'"),
    (KeyboardInterrupt(), 130, r"^atoken x: interrupted; partial outputs were removed\.$"),
    (PermissionError(13, "Permission denied", "/root/o.png"), 1, r"^atoken x: \[Errno 13\] Permission denied: '/root/o\.png'$"),
    (MemoryError(), 1, r"^atoken x: MemoryError$"),
    (SystemExit("a message\nover two lines"), 1, r"^atoken x: a message over two lines$"),
])
def test_every_exception_becomes_one_line(error, status, message, capfd):
    def command(_):
        raise error

    with pytest.raises(CommandError) as done:
        run_command(command, None, "x")
    err = capfd.readouterr().err
    assert done.value.code == status and err.count("\n") == 1 and re.search(message, err), err
    with pytest.raises(type(error)):
        run_command(command, None, "x", debug=True)  # --debug: the exception itself, with its traceback


def test_debug_flag_and_exit_status_in_a_real_process(inputs):
    run = [sys.executable, "-m", "atoken_diffusers"]
    bad = subprocess.run([*run, "reconstruct", str(inputs / "bad.png"), "--output", str(inputs / "o.png")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("atoken reconstruct: ")
    usage = subprocess.run([*run, "reconstruct", "x.png", "--output", "o.png", "--max-frames", "0"],
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1
    debug = subprocess.run([*run, "--debug", "reconstruct", str(inputs / "bad.png"), "--output", str(inputs / "o.png")],
                           capture_output=True, text=True, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "is not a readable image" in debug.stderr


# ---------------------------------------------------------------- the extension decides the bytes

@pytest.mark.parametrize(("name", "magic"), [
    ("o.png", b"\x89PNG"), ("o.jpg", b"\xff\xd8\xff"), ("o.webp", b"RIFF"), ("o.bmp", b"BM"), ("o.tif", b"II*\x00"),
])
def test_images_are_written_in_the_format_of_their_extension(tmp_path, name, magic):
    save_image(real_image(16, 16), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)


@pytest.mark.parametrize(("name", "magic", "at"), [
    ("o.mp4", b"ftyp", 4), ("o.m4v", b"ftyp", 4), ("o.mov", b"ftyp", 4), ("o.mkv", b"\x1a\x45\xdf\xa3", 0),
])
def test_videos_are_written_in_the_container_of_their_extension(tmp_path, name, magic, at):
    save_video(real_image(16, 16)[:, :, None].repeat(1, 1, 2, 1, 1), tmp_path / name, fps=2)
    assert (tmp_path / name).read_bytes()[at : at + len(magic)] == magic


@pytest.mark.parametrize(("writer", "name"), [(save_image, "o.mp4"), (save_image, "o.xyz"), (save_image, "o.gif"),
                                              (save_video, "o.png"), (save_video, "o.avi"), (save_video, "o")])
def test_writers_refuse_an_extension_they_cannot_honour(tmp_path, writer, name):
    x = real_image(16, 16) if writer is save_image else real_image(16, 16)[:, :, None].repeat(1, 1, 2, 1, 1)
    with pytest.raises(ValueError, match=r"is not an? (image|video) extension this writer knows; use one of"):
        writer(x, tmp_path / name)
    assert listing(tmp_path) == {}


# ---------------------------------------------------------------- in place, modes, stale temporaries

@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_reconstruct_in_place_with_overwrite_keeps_the_file_mode(inputs, mode, capsys):
    src = inputs / "in.png"
    src.chmod(mode)
    old = src.read_bytes()
    main(["reconstruct", str(src), "--output", str(src), "--overwrite"])
    assert "PSNR" in capsys.readouterr().out
    assert stat.S_IMODE(src.stat().st_mode) == mode and src.read_bytes() != old and src.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in inputs.iterdir() if ".tmp-" in p.name]


def test_a_new_run_clears_only_dead_writers_temporaries_of_its_output(inputs, capsys):
    dead = inputs / ".o.png.tmp-999999999-abc.png"  # no such process
    legacy = inputs / ".o.png.tmp-xyz123.png"  # earlier versions' names carry no process id
    alive = inputs / f".o.png.tmp-{os.getppid()}-def.png"  # pytest's parent runs: a writer may be at work
    other = inputs / ".other.png.tmp-999999999-abc.png"  # another output's: not this run's business
    for p in (dead, legacy, alive, other):
        p.write_bytes(b"half")
    main(["reconstruct", str(inputs / "in.png"), "--output", str(inputs / "o.png")])
    assert not dead.exists() and not legacy.exists() and alive.exists() and other.exists()
    assert (inputs / "o.png").is_file()


SIGTERMED_WRITER = """
import sys, time
from pathlib import Path
from atoken_diffusers.utils.atomic import atomic_folder, atomic_path, install_interrupt_cleanup
install_interrupt_cleanup()
folder = Path(sys.argv[1])
with atomic_folder(folder / "model") as d, atomic_path(folder / "rec.png") as f:
    (d / "config.json").write_text("half")
    f.write_bytes(b"half a png")
    (folder / "ready").write_text("")
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_an_interrupted_writer_removes_its_temporaries(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SIGTERMED_WRITER), str(tmp_path)],
                            stderr=subprocess.PIPE)
    _wait_for(tmp_path / "ready", proc)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    # SIGTERM/SIGHUP: SystemExit(128 + signal); SIGINT: Python's KeyboardInterrupt exit (killed by SIGINT)
    assert proc.returncode in (128 + sig, -sig), proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


# ---------------------------------------------------------------- convert --overwrite killed at every step

KILLED_CONVERT = """
import os, sys, time
from pathlib import Path
from atoken_diffusers.utils import atomic
point, marker = sys.argv[1], Path(sys.argv[2])

def pause():
    marker.write_text(point)
    time.sleep(120)

if point == "new folder written, not published":
    publish = atomic.publish_folder
    atomic.publish_folder = lambda *a, **k: (pause(), publish(*a, **k))[1]
elif point == "folders swapped":
    exchange = atomic._exchange
    atomic._exchange = lambda a, b: (exchange(a, b), pause())[0]
elif point == "old folder half deleted":
    rmtree = atomic.shutil.rmtree
    def half(path, *a, **k):
        weights = sorted(Path(path).rglob("*.safetensors"))
        if weights:
            weights[0].unlink()
            pause()
        rmtree(path, *a, **k)
    atomic.shutil.rmtree = half
elif point == "no exchange: old folder moved aside":
    atomic._exchange = lambda a, b: False
    replace = os.replace
    def aside(src, dst):
        replace(src, dst)
        if str(dst).endswith(".old/" + Path(src).name):
            pause()
    atomic.os.replace = aside
from atoken_diffusers.cli.main import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize(("point", "expect"), [
    ("new folder written, not published", "old"),
    ("folders swapped", "new"),
    ("old folder half deleted", "new"),
    ("no exchange: old folder moved aside", "old after remove_stale_temps"),
])
def test_convert_overwrite_killed_leaves_a_complete_folder(tmp_path, point, expect):
    from atoken_diffusers import AutoencoderAToken

    out = tmp_path / "model"
    convert = ["convert", "--checkpoint", str(PARITY / "atoken.pt"), "--output", str(out), "--config"]
    main([*convert, str(PARITY / "atoken_config.yaml")])  # the old folder: no FSQ
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_CONVERT), point, str(tmp_path / "marker"),
                             "--quiet", *convert, str(PARITY / "atoken_config_fsq.yaml"), "--overwrite"],
                            stderr=subprocess.PIPE)
    _wait_for(tmp_path / "marker", proc)
    proc.kill()
    proc.wait(timeout=30)
    if expect.endswith("remove_stale_temps"):
        assert not out.exists()  # the one window of the two-rename fallback...
        remove_stale_temps(tmp_path)  # ...which the next run's cleanup closes
    model = AutoencoderAToken.from_pretrained(out)  # complete: config and weights
    assert (model.quantizer is not None) == (expect == "new")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "model"]
    assert torch.isfinite(next(model.parameters())).all()
