"""Sizes and memory: huge inputs are refused before any work with the estimate, the available memory and the fix;
no value check copies an expanded or strided view; tiling pads per tile (issue "Hardened edges", item 3)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from atoken_diffusers.utils import memory
from atoken_diffusers.utils.validation import InputTooLargeError, check_finite, value_range
from tests.conftest import assert_same_run

GB = 1 << 30


def huge(*shape, value=0.0):
    """A view of ``shape`` that costs one element per channel: what a careless caller passes as a giant input."""
    return torch.full((shape[0], shape[1]) + (1,) * (len(shape) - 2), value).expand(*shape)


def peak_growth_mb(fn) -> float:
    """How much the process's peak RSS grows while ``fn`` runs (MB): 0 when it stays under an earlier peak."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        fn()
    finally:
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert growth < 64, f"the call grew the peak RSS by {growth:.0f} MB"
    return growth


@pytest.fixture()
def memory_of(monkeypatch):
    """Pretend the device has ``available`` bytes free."""
    def set_available(available):
        monkeypatch.setattr(memory, "available_bytes", lambda device: available)
    return set_available


# (call, input, options, available bytes, message): every refusal names the input, the numbers and the fix.
REFUSALS = [
    ("encode", huge(1, 3, 30000, 30000), {}, 16 * GB, r"x of size 30000 x 30000 \(batch 1\) needs about .* GB to "
     r"encode but only 17.2 GB is available on cpu; pass tiling=True"),
    ("encode", huge(1, 3, 30000, 30000), dict(tiling=True), 256 << 20, "smaller input .*even the smallest tiles"),
    ("encode", huge(1, 3, 12000, 12000), {}, 8 * GB, "x of size 12000 x 12000 .*pass tiling=True"),
    ("encode", huge(1, 3, 4096, 4096), dict(tiling=True, tile_sample_min_size=4096), 512 << 20,
     r"tiles of 4096 px\) needs .*smaller tile_sample_min_size"),
    ("encode", huge(1, 3, 400, 4000, 4000), {}, 2 * GB, "x of size 400 x 4000 x 4000"),
    ("encode", huge(64, 3, 2048, 2048), {}, 4 * GB, r"\(batch 64\).*slicing=True"),
    ("forward", huge(1, 3, 12000, 12000), {}, 8 * GB, "x of size 12000 x 12000 .* to encode"),
    ("embed", huge(1, 3, 12000, 12000), {}, 8 * GB, "x of size 12000 x 12000"),
    ("encode_features", huge(2, 3, 8000, 8000), {}, 8 * GB, r"\(batch 2\)"),
    ("decode", huge(1, 12, 2000, 2000), {}, 8 * GB, "z of size 2000 x 2000 .* to decode"),
    ("decode", huge(1, 12, 100, 500, 500), {}, 8 * GB, "z of size 100 x 500 x 500"),
    ("decode", huge(1, 12, 2000, 2000), dict(tiling=True), 64 << 20, "smaller input"),
    ("decode", huge(1, 12, 64, 64), {}, 1 << 20, r"needs about .* MB to decode but only 1.05 MB"),
]


@pytest.mark.parametrize("call, x, options, available, message", REFUSALS)
def test_too_large_is_refused_before_work(tiny_model, memory_of, call, x, options, available, message):
    memory_of(available)
    with pytest.raises(InputTooLargeError, match=message) as info:
        peak_growth_mb(lambda: getattr(tiny_model, call)(x, **options))
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


# Value checks on views that would cost gigabytes if copied: the usual message, without spending the memory.
VALUE_CASES = [
    (lambda m: m.encode(huge(1, 3, 12000, 12000, value=float("nan"))), "x contains 432000000 NaN/Inf"),
    (lambda m: m.encode(huge(1, 3, 12000, 12000, value=255.0)), r"values up to 255.*x / 127.5 - 1"),
    (lambda m: m.decode(huge(1, 12, 3000, 3000, value=float("inf"))), "z contains 108000000 NaN/Inf"),
    (lambda m: check_finite(huge(1, 3, 16000, 16000, value=float("nan")), "pixels"), "pixels contains"),
]


@pytest.mark.parametrize("call, message", VALUE_CASES)
def test_value_checks_never_copy_a_view(tiny_model, memory_of, call, message):
    memory_of(1 << 50)  # the size guard passes: only the value check stands between the view and the model
    with pytest.raises(ValueError, match=message):
        peak_growth_mb(lambda: call(tiny_model))


def test_value_range_of_a_huge_view_is_free():
    x = huge(1, 3, 30000, 30000, value=0.5)
    peak_growth_mb(lambda: value_range(x))
    assert value_range(x) == (0.5, 0.5)


@pytest.mark.parametrize("view", ["permuted", "strided", "expanded row", "channels last"])
def test_value_range_of_strided_views_is_exact(view, monkeypatch):
    monkeypatch.setattr("atoken_diffusers.utils.validation.REDUCE_CHUNK", 1000)  # force the chunked path
    torch.manual_seed(0)
    base = torch.randn(2, 3, 64, 48)
    x = {"permuted": base.permute(3, 1, 0, 2), "strided": base[..., ::3, 1::2],
         "expanded row": base[:, :, :1].expand(2, 3, 64, 48)[..., ::2],
         "channels last": base.contiguous(memory_format=torch.channels_last)}[view]
    assert value_range(x) == (x.min().item(), x.max().item())


def test_fsq_indices_as_expanded_view(fsq_model):
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4096\); got values in \[5000, 5000\]"):
        fsq_model.detokenize(torch.full((1, 2, 1, 1), 5000).expand(1, 2, 4000, 4000))


@pytest.mark.parametrize("shape, tile", [((1, 3, 72, 100), 32), ((2, 3, 5, 40, 56), 16)])
def test_tiles_pad_themselves_like_the_whole_image(tiny_model, shape, tile):
    """Padding per tile (never the whole image) gives the moments of encoding the image padded whole first."""
    torch.manual_seed(1)
    x = torch.rand(shape) * 2 - 1
    dh, dw = -shape[-2] % 16, -shape[-1] % 16
    flat = F.pad(x.flatten(0, -3)[:, None], (0, dw, 0, dh), mode="replicate")[:, 0]
    padded = flat.reshape(*shape[:-2], shape[-2] + dh, shape[-1] + dw)
    options = dict(tiling=True, tile_sample_min_size=tile, tile_overlap_factor=0.25)
    with torch.no_grad():
        assert_same_run(tiny_model.encode(x, **options).latent_dist.mean,
                        tiny_model.encode(padded, **options).latent_dist.mean)


def test_tiled_image_decode_keeps_frame_zero_of_the_group(tiny_model):
    """Tiled image decode blends only the kept frame; it equals frame 0 of decoding the same latents as a clip."""
    torch.manual_seed(2)
    z = torch.randn(1, 12, 5, 7)
    options = dict(tiling=True, tile_sample_min_size=48)
    with torch.no_grad():
        image = tiny_model.decode(z, **options).sample
        clip = tiny_model.decode(z[:, :, None], **options).sample
    assert image.shape == (1, 3, 80, 112) and clip.shape == (1, 3, 4, 80, 112)
    assert_same_run(image, clip[:, :, 0])


@pytest.mark.parametrize("size, window", [((16, 16), (0, 0, 16, 16)), ((7, 33), (2, 5, 4, 20)),
                                          ((1875, 1875), (1000, 1800, 64, 75))])
def test_position_table_window_equals_the_resized_table(size, window):
    """A spatial tile builds only its rows and columns of the resized table: the same values as resizing the whole
    table with F.interpolate (exact at the native 16 x 16), without the (H x W x dim) tensor of a huge image."""
    from atoken_diffusers.layers.position_table import LearnedPositionTable

    torch.manual_seed(3)
    table = LearnedPositionTable(8)
    torch.nn.init.normal_(table.weight)
    top, left, rows, cols = window
    whole = F.interpolate(table.weight.t().reshape(1, 8, 16, 16), size=size, mode="bilinear", align_corners=False,
                          antialias=True)[0, :, top : top + rows, left : left + cols]
    assert torch.allclose(table.resized(*size, window), whole.flatten(1).t(), atol=1e-6)


# (shape, mode, options, other shape, relation between the estimate with options and that of other shape without).
ESTIMATES = [
    ((1, 3, 12000, 12000), "encode", dict(tiling=True), None, lambda tiled, plain: tiled * 20 < plain),
    ((8, 3, 512, 512), "encode", dict(slicing=True), None, lambda sliced, plain: sliced * 3 < plain),
    ((1, 12, 400, 400), "decode", dict(tiling=True), None, lambda tiled, plain: tiled * 4 < plain),
    ((1, 3, 64, 1024, 1024), "encode", {}, (1, 3, 16, 1024, 1024), lambda long, short: long < 1.5 * short),
    ((1, 3, 1000, 1000), "encode", {}, (1, 3, 1008, 1008), lambda padded, exact: padded > exact),
]


@pytest.mark.parametrize("shape, mode, options, other, relation", ESTIMATES)
def test_estimate_follows_the_execution_plan(tiny_model, shape, mode, options, other, relation):
    with torch.no_grad():
        assert relation(tiny_model.estimate_peak_bytes(shape, mode, **options),
                        tiny_model.estimate_peak_bytes(other or shape, mode))


def test_forward_with_gradients_counts_both_halves(tiny_model):
    training = tiny_model.estimate_peak_bytes((1, 3, 512, 512), "forward")  # parameters require grad
    with torch.no_grad():
        inference = tiny_model.estimate_peak_bytes((1, 3, 512, 512), "forward")
    assert training > 2 * inference


@pytest.mark.parametrize("shape, mode, message", [((1, 3, 64), "encode", "shape must have 4"),
                                                   ((1, 3, 64, 64), "backward", "mode must be 'encode'")])
def test_estimate_arguments(tiny_model, shape, mode, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.estimate_peak_bytes(shape, mode)


def test_no_check_while_compiling_or_on_meta(tiny_model, memory_of, monkeypatch):
    memory_of(1)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    memory.check_fits(tiny_model, (1, 3, 30000, 30000), "encode", torch.float32, torch.device("cpu"),
                      tiny_model.inference_options())  # no raise: graphs stay whole
    monkeypatch.undo()
    assert memory.available_bytes(torch.device("meta")) is None


MEASURE = """
import json, sys, threading, time, torch
from atoken_diffusers import AutoencoderAToken

def anonymous_bytes():  # RssAnon: RSS counts library pages too, which memory pressure evicts and the call re-reads
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))

def peak_growth(call):
    base, peak, done = anonymous_bytes(), [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_bytes())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    call()
    done.set()
    sampler.join()
    return peak[0] - base

model = AutoencoderAToken.from_preset("small").eval().requires_grad_(False)
model.decode(model.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mode())  # kernels and allocator warmed up
mode, shape, options = json.loads(sys.argv[1])
x = torch.rand(shape).mul_(2).sub_(1)
print(peak_growth(lambda: getattr(model, mode)(x, **options)), model.estimate_peak_bytes(shape, mode, **options))
"""
CALIBRATION = [("encode", [1, 3, 1000, 1000], {}), ("decode", [1, 48, 4, 32, 32], {}),
               ("encode", [1, 3, 2048, 2048], {"tiling": True})]


def test_estimate_covers_a_measured_peak():
    """The calibration, kept: the peak growth of anonymous memory (sampled every millisecond) while the small preset
    encodes a 1000-px image, decodes a 16-frame clip and encodes a 2048-px image in tiles lies between half the
    estimate and the estimate. One fresh process per case (freed memory a process keeps would hide a later case's
    peak), run side by side."""
    runs = [subprocess.Popen([sys.executable, "-c", MEASURE, json.dumps(case)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True) for case in CALIBRATION]
    for case, run in zip(CALIBRATION, runs):
        out, _ = run.communicate()
        assert run.returncode == 0, case
        measured, estimate = (int(v) for v in out.split()[-2:])
        assert measured <= estimate <= 2 * measured, (case, measured, estimate)


@pytest.mark.parametrize("side, available, fix", [(1024, 150 << 20, "pass --tiling, or a smaller input."),
                                                   (64, 1 << 20, "even the smallest tiles would not fit.")])
def test_cli_names_its_own_flag(tmp_path, memory_of, capsys, side, available, fix):
    """The command line words the fix with its flags, in one line, and writes nothing."""
    from atoken_diffusers.cli.errors import CommandError
    from atoken_diffusers.cli.main import main
    from atoken_diffusers.utils.media import save_image

    save_image(torch.zeros(1, 3, side, side), tmp_path / "in.png")
    memory_of(available)
    with pytest.raises(CommandError) as info:
        main(["reconstruct", str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in err and err.endswith(fix), err
    assert err.startswith(f"atoken reconstruct: x of size {side} x {side} (batch 1) needs about")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_comfyui_tiles_when_untiled_would_not_fit(tiny_model, monkeypatch):
    """Like ComfyUI's own VAEs after an out-of-memory error, the AToken VAE falls back to spatial tiles when the
    estimate refuses the untiled call; when even tiles do not fit, the message names ComfyUI's nodes."""
    from comfyui_nodes.comfy_vae import ATokenComfyVAE

    vae = ATokenComfyVAE(tiny_model)
    image = torch.rand(1, 1024, 1024, 3)
    with torch.no_grad():
        untiled = vae.model.estimate_peak_bytes((1, 3, 1, 1024, 1024), "encode")
    monkeypatch.setattr(memory, "available_bytes", lambda device: untiled // 2)
    with torch.no_grad():
        latent = vae.encode(image)
    assert latent.shape == (1, 12, 1, 64, 64)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(ValueError, match="downscale the IMAGE .*even the smallest tiles would not fit"):
        vae.encode(image)


def test_metrics_of_a_huge_image_work_in_bands(monkeypatch):
    """PSNR/SSIM (what `atoken reconstruct` prints) score large images in bands of rows: whole, SSIM's blurred maps
    needed ~10 times the image (an OOM kill after a 12000 x 12000 tiled reconstruction). With bands of 512K values
    (2M by default) a 1000 x 1000 image grows the peak far less than the 190-200 MB scoring it whole costs
    (measured), and the scores equal the one-band computation."""
    from atoken_diffusers.utils import metrics

    torch.manual_seed(4)
    x = torch.rand(1, 3, 1000, 1000) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    monkeypatch.setattr(metrics, "BAND_ELEMENTS", 1 << 19)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    banded = metrics.ssim(x, y), metrics.psnr(x, y)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 110  # measured 50-70
    crop = x[..., :200, :300], y[..., :200, :300]
    crop_banded = metrics.ssim(*crop), metrics.psnr(*crop)
    monkeypatch.setattr(metrics, "BAND_ELEMENTS", 1 << 30)
    assert crop_banded == pytest.approx((metrics.ssim(*crop), metrics.psnr(*crop)), rel=1e-6)
    assert 0 < banded[0] < 1 and 15 < banded[1] < 30
