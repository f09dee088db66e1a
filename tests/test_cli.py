"""The `atoken` command line on real media (scikit-image's photographs) with the converted tiny weights."""

import re
import subprocess
import sys

import pytest
import torch

from atoken_diffusers.cli.main import main
from atoken_diffusers.utils.media import load_image, load_video, save_image, save_video
from atoken_diffusers.utils.metrics import psnr, ssim
from tests.conftest import assert_same_run, real_image


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


# ------------------------------------------------------------------ a fast, quiet command line (issue "Feels native")

HEAVY = ("torch", "diffusers", "peft", "transformers", "bitsandbytes", "gradio", "accelerate")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_help_writes_nothing_to_stderr():
    result = subprocess.run([sys.executable, "-m", "atoken_diffusers", "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and result.stderr == ""
    assert "reconstruct" in result.stdout and "--quiet" in result.stdout


def test_building_the_parser_imports_no_heavy_library():
    # the parser alone (what --help and argument errors run) must not pay for torch, diffusers, peft, bitsandbytes...
    code = ("import sys; import atoken_diffusers.cli.main as m; m.build_parser(); "
            f"print(sorted(k for k in {HEAVY!r} if k in sys.modules))")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]" and result.stderr == ""


def test_an_argument_error_names_the_argument_without_importing_torch():
    code = ("import sys\nimport atoken_diffusers.cli.main as m\ntry:\n    m.main(['reconstruct'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)")
    result = _python(code)
    assert result.stdout.split() == ["2", "False"]
    assert "required: input, --output" in result.stderr


def test_package_names_load_lazily():
    result = _python("import sys, atoken_diffusers as a; print('torch' in sys.modules); "
                     "from atoken_diffusers import AutoencoderAToken, SparseTokens, FSQ, PRESETS; "
                     "print(AutoencoderAToken.__module__, SparseTokens.__name__, 'AutoencoderAToken' in dir(a))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "atoken_diffusers.models.autoencoder_atoken", "SparseTokens", "True"]
    import atoken_diffusers

    with pytest.raises(AttributeError, match="no attribute 'Autoencoder'"):
        atoken_diffusers.Autoencoder  # noqa: B018


def test_dtype_choices_match_the_loader():
    from atoken_diffusers.cli.common import DTYPE_CHOICES
    from atoken_diffusers.models.loading import DTYPES

    assert DTYPE_CHOICES == tuple(sorted(DTYPES))


def test_bitsandbytes_kernel_warning_is_filtered_and_others_are_not(caplog):
    import logging

    from atoken_diffusers.cli.main import quiet_third_party_noise

    quiet_third_party_noise()
    quiet_third_party_noise()  # idempotent: one filter
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "no trust")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_video_bar_counts_every_temporal_tile(converted_dirs, capsys):
    from atoken_diffusers.cli.reconstruct import _tile_progress
    from atoken_diffusers.models.loading import load_autoencoder

    model = load_autoencoder(converted_dirs["plain"])
    x = real_image(32, 32)[:, :, None].repeat(1, 1, 20, 1, 1)  # 20 frames: 2 encoder + 2 decoder tiles of 16
    with torch.inference_mode():
        expected = model(x).sample
        with _tile_progress(model, 20, enabled=True) as bar:
            update = bar.update
            bar.update = lambda n=1: update(n) or True  # tqdm returns True on a redraw; that must not leak out
            rec = model(x).sample
    assert bar.total == 4 and bar.n == 4
    assert_same_run(rec, expected)  # counting tiles does not change the reconstruction
    assert "tile" in capsys.readouterr().err
    with _tile_progress(model, None, enabled=True) as none:  # images: no bar, hooks untouched
        assert none is None
    assert not model.encoder._forward_hooks and not model.decoder._forward_hooks


def test_quiet_video_reconstruct_prints_only_the_result_line(tmp_path, converted_dirs, capfd):
    base = real_image(64, 64)
    src, out = tmp_path / "v.mp4", tmp_path / "rec.mp4"
    save_video(base[:, :, None].repeat(1, 1, 8, 1, 1), src, fps=8)
    capfd.readouterr()
    main(["--quiet", "reconstruct", str(src), "--model", str(converted_dirs["plain"]), "--output", str(out)])
    captured = capfd.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 1 and "PSNR" in lines[0]


def test_progress_bars_only_on_a_terminal(capsys):
    from atoken_diffusers.utils.progress import progress_bar

    assert progress_bar(range(3)).disable  # pytest's stderr is not a terminal
    assert progress_bar(range(3), enabled=False).disable
    assert list(progress_bar(range(3), enabled=True, desc="shown")) == [0, 1, 2]
    assert "shown" in capsys.readouterr().err


def test_encode_dataset_bar_counts_every_file_and_skipped_shards(tmp_path, converted_dirs, capsys, monkeypatch):
    from atoken_diffusers.generation.data import encode_dataset as module
    from atoken_diffusers.utils.progress import progress_bar

    bars = []
    monkeypatch.setattr(module, "progress_bar", lambda *a, **k: bars.append(progress_bar(*a, **k)) or bars[-1])
    for label, (h, w) in (("cat", (48, 64)), ("space", (64, 48))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            save_image(real_image(h + 8 * i, w), tmp_path / "data" / label / f"{i}.png")
    args = (tmp_path / "data", converted_dirs["plain"], tmp_path / "shards")
    module.encode_dataset(*args, resolution=32, shard_size=4, batch_size=2, progress=True)
    assert "encode-dataset (2 shards)" in capsys.readouterr().err
    assert module.encode_dataset(*args, resolution=32, shard_size=4, batch_size=2, progress=True)["skipped"] == 2
    # both runs reach 6/6 files: finished shards count as done, so a resumed run's bar starts part-way
    assert [(b.n, b.total) for b in bars] == [(6, 6), (6, 6)]
    capsys.readouterr()
    module.encode_dataset(*args, resolution=32, shard_size=4, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


def test_console_script_exits_zero_after_a_command_that_returns_a_value(monkeypatch):
    """setuptools' console-script wrapper calls sys.exit(entry()): a command's returned summary (encode-dataset
    returns one) must not become exit status 1 with the summary printed."""
    import atoken_diffusers.cli.main as cli

    monkeypatch.setattr(cli, "main", lambda argv=None: {"shards": 2})
    assert cli.entry() is None
