"""The `atoken` command line on real media (scikit-image's photographs) with the converted tiny weights."""

import re
import subprocess
import sys

import torch

from atoken_diffusers.cli.main import main
from atoken_diffusers.utils.media import load_image, load_video, save_image, save_video
from atoken_diffusers.utils.metrics import psnr, ssim
from tests.conftest import real_image


def _scores(text):
    m = re.search(r"PSNR ([\d.]+) dB, SSIM ([\d.]+)", text)
    return float(m.group(1)), float(m.group(2))


def test_reconstruct_image(tmp_path, converted_dirs, capsys):
    src, out = tmp_path / "astronaut.png", tmp_path / "rec.png"
    save_image(real_image(50, 70), src)  # not a multiple of 16: padded, then cropped back
    main(["reconstruct", str(src), "--model", str(converted_dirs["plain"]), "--output", str(out)])
    printed_psnr, printed_ssim = _scores(capsys.readouterr().out)
    x, rec = load_image(src), load_image(out)
    assert rec.shape == x.shape == (1, 3, 50, 70)
    assert abs(psnr(rec, x) - printed_psnr) < 0.05  # the saved file is the reconstruction that was scored
    assert abs(ssim(rec, x) - printed_ssim) < 0.01


def test_reconstruct_video_and_discrete(tmp_path, converted_dirs, capsys):
    base = real_image(128, 128)
    frames = torch.stack([base[0, :, 16 + i : 16 + i + 48, 8 + 2 * i : 8 + 2 * i + 64] for i in range(6)], dim=1)
    src, out = tmp_path / "pan.mp4", tmp_path / "rec.mp4"
    save_video(frames, src, fps=8)
    main(["reconstruct", str(src), "--model", str(converted_dirs["fsq"]), "--output", str(out), "--discrete"])
    _scores(capsys.readouterr().out)
    rec, fps = load_video(out)
    assert rec.shape == (1, 3, 6, 48, 64) and fps == 8


def test_media_roundtrip_is_faithful(tmp_path):
    x = real_image(64, 64)[:, :, None].repeat(1, 1, 3, 1, 1)
    save_video(x, tmp_path / "v.mp4", fps=10)
    y, _ = load_video(tmp_path / "v.mp4")
    assert psnr(y, x) > 35  # H.264 at crf 18


def test_selftest_command_passes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "atoken_diffusers", "selftest", "--output", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every output matches" in result.stdout
    assert "video.decoded_kvcache" in result.stdout and (tmp_path / "atoken_config_fsq" / "config.json").is_file()
