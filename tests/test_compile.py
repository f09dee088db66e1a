"""One graph under torch.compile and torch.export, no host syncs in encode/decode, ONNX parity.

On the tiny preset (cheap on CPU). Graph breaks are counted with ``torch._dynamo.explain``; ``fullgraph=True``
compiles use the ``aot_eager`` backend (the same capture and functionalisation as inductor, without code generation
time), and compare with eager outputs.
"""

from __future__ import annotations

import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.models.export import export_onnx, export_program
from tests.conftest import RUN_TO_RUN, real_image

EXPORT_TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderAToken.from_preset("tiny").eval()


def _image(h=48, w=64):
    return real_image(h, w)


def _video(frames=8, side=32):
    img = real_image(side, side)
    shift = torch.stack([img.roll(i, dims=-1) for i in range(frames)], dim=2)  # (1, 3, T, H, W), moving content
    return shift


def _calls(vae):
    return {
        "encode": lambda x: vae.encode(x).latent_dist.mode(),
        "decode": lambda z: vae.decode(z).sample,
        "forward": lambda x: vae(x).sample,
    }


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("call", ["encode", "decode", "forward"])
def test_no_graph_breaks(vae, kind, call):
    x = _image() if kind == "image" else _video()
    with torch.no_grad():
        if call == "decode":
            x = vae.encode(x).latent_dist.mode()
        torch._dynamo.reset()
        explained = torch._dynamo.explain(_calls(vae)[call])(x)
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("dynamic", [False, True])
def test_fullgraph_compile_matches_eager(vae, dynamic):
    torch._dynamo.reset()
    forward = torch.compile(lambda x: vae(x).sample, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    # Dynamic: two image sizes through one graph (a video, of another rank, would only add a second compile; the
    # static case covers it).
    inputs = (_image(48, 64), _image(32, 32)) + (() if dynamic else (_video(),))
    with torch.no_grad():
        for x in inputs:
            torch.testing.assert_close(forward(x), vae(x).sample, **RUN_TO_RUN)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_export_with_dynamic_sides(vae, part):
    program = export_program(vae, part, dynamic=True)
    module = program.module()
    with torch.no_grad():
        for side in ((32, 48), (80, 32)):
            x = _image(*side)
            if part == "decoder":
                x = vae.encode(x).latent_dist.mode()
            expected = vae.encode(x).latent_dist.mode() if part == "encoder" else vae.decode(x).sample
            torch.testing.assert_close(module(x), expected, **EXPORT_TOL)


def test_export_video_with_dynamic_frames(vae):
    module = export_program(vae, "encoder", video=True, dynamic=True).module()
    with torch.no_grad():
        for frames in (12, 16):
            x = _video(frames)
            torch.testing.assert_close(module(x), vae.encode(x).latent_dist.mode(), **EXPORT_TOL)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_onnx_matches_pytorch(vae, part, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
    path = export_onnx(vae, part, tmp_path / f"{part}.onnx", dynamic=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for side in ((48, 64), (32, 96)):
            x = _image(*side)
            if part == "decoder":
                x = vae.encode(x).latent_dist.mode()
            expected = vae.encode(x).latent_dist.mode() if part == "encoder" else vae.decode(x).sample
            (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(got), expected, **EXPORT_TOL)


def test_export_command_writes_a_program_that_runs(vae, tmp_path):
    from atoken_diffusers.cli.main import main

    vae.save_pretrained(tmp_path / "model")
    main(["export", "--model", str(tmp_path / "model"), "--format", "pt2", "--part", "decoder",
          "--output", str(tmp_path / "out")])
    program = torch.export.load(str(tmp_path / "out" / "decoder.pt2"))
    z = torch.randn(1, vae.config.latent_channels, 3, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(z), vae.decode(z).sample, **EXPORT_TOL)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decoder.pt2"]  # no temporary files left
