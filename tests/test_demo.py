"""The Gradio demo, launched on 127.0.0.1 and driven through ``gradio_client`` on real bundled media (a scikit-image
photograph, a few frames of Gradio's world.mp4, Gradio's Bunny.obj) with the official-format tiny FSQ weights, the
tiny Gaussian decoder and a tiny random SigLIP text tower. Outputs are decoded from the files the app returns and
their scores recomputed with the library's own functions."""

from __future__ import annotations

import argparse
import runpy
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
pytest.importorskip("trimesh")

from atoken_diffusers.demo import visuals  # noqa: E402
from atoken_diffusers.demo.examples import bundled_examples  # noqa: E402
from atoken_diffusers.utils.media import load_image, load_video, save_video  # noqa: E402
from atoken_diffusers.utils.metrics import psnr, ssim  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skimage_file(name: str = "chelsea.png") -> str:
    path = next((p for p in bundled_examples()["images"] if p.endswith(name)), None)
    if path is None:
        pytest.skip("scikit-image's bundled images are not installed")
    return path


def launch_demo(root: Path, converted_dirs, parity_dir, text_model: bool = True):
    """Start the app as `atoken demo` does, without blocking: (app, url, folders)."""
    from atoken_diffusers.cli import demo
    from atoken_diffusers.conversion.original_gaussian_decoder import load_original_gaussian_decoder
    from tests.text_models import make_siglip_text_tower

    gs = root / "gs"
    load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml").save_pretrained(gs)
    argv = ["--model", str(converted_dirs["fsq"]), "--model", str(converted_dirs["plain"]), "--gs-decoder", str(gs),
            "--port", str(free_port())]
    if text_model:
        words = ["cat", "dog", "rocket", "astronaut", "a photo of the video rendering good close up"]
        argv += ["--text-model", str(make_siglip_text_tower(words, root / "text"))]
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    app, url = demo.run(parser.parse_args(argv), block=False)
    return app, url, {"gs": gs, "text": root / "text"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, converted_dirs, parity_dir):
    from gradio_client import Client

    app, url, folders = launch_demo(tmp_path_factory.mktemp("demo"), converted_dirs, parity_dir)
    yield Client(url, verbose=False), folders
    app.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 6 frames of Gradio's world.mp4 at 64 x 112, as an H.264 mp4."""
    source = next((p for p in bundled_examples()["videos"] if p.endswith("world.mp4")), None)
    if source is None:
        pytest.skip("gradio's media_assets videos are missing")
    x, fps = load_video(source, max_frames=6)
    small = torch.nn.functional.interpolate(x[0].transpose(0, 1), size=(64, 112), mode="bilinear", antialias=True)
    out = tmp_path_factory.mktemp("clip") / "world6.mp4"
    save_video(small.transpose(0, 1)[None], out, fps=fps)
    return out


def _predict(served, *args, api_name):
    from gradio_client import handle_file

    client, _ = served
    args = [handle_file(str(a)) if isinstance(a, Path) else a for a in args]
    return client.predict(*args, api_name=api_name)


def _model(converted_dirs):
    from atoken_diffusers import AutoencoderAToken

    return AutoencoderAToken.from_pretrained(converted_dirs["fsq"]).eval()


def test_model_info(served, converted_dirs):
    text = _predict(served, str(converted_dirs["fsq"]), api_name="/model_info")
    assert "12 latent channels" in text and "FSQ 2 codebooks x 4096 codes" in text


def _table(value) -> dict[str, dict]:
    """A Dataframe output as {first column: row as {header: cell}}."""
    return {row[0]: dict(zip(value["headers"], row)) for row in value["data"]}


def test_image_reconstruction(served, converted_dirs):
    path = skimage_file("chelsea.png")
    cont, disc, err, latent, table, summary = _predict(served, str(converted_dirs["fsq"]), Path(path),
                                                       api_name="/reconstruct_image")
    x = load_image(path)
    assert torch.equal(load_image(cont[0]), x) and torch.equal(load_image(disc[0]), x)  # before = the original
    rows = _table(table)
    assert list(rows) == ["continuous", "FSQ tokens"]
    shown = {"continuous": load_image(cont[1]), "FSQ tokens": load_image(disc[1])}
    for name, rec in shown.items():  # PNG out: the table scores exactly the pixels shown after the slider
        assert rec.shape == x.shape
        assert psnr(rec, x) == pytest.approx(rows[name]["PSNR (dB)"], abs=1e-3)
        assert ssim(rec, x) == pytest.approx(rows[name]["SSIM"], abs=1e-3)
        assert rows[name]["latent grid"] == "19 x 29"
    assert rows["continuous"]["per cell"] == "12 channels"
    assert rows["FSQ tokens"]["per cell"] == "2 codebooks x 4096 codes"
    for picture in (err, latent):
        assert load_image(picture).shape == x.shape
    model = _model(converted_dirs)
    with torch.inference_mode():
        z = model.encode(x).latent_dist.mode()
        direct = {"continuous": model.decode(z).sample[..., :300, :451], "FSQ tokens": model(x).sample}
    for name, rec in direct.items():  # the library's own reconstruction, unrounded
        assert psnr(rec.clamp(-1, 1), x) == pytest.approx(rows[name]["PSNR (dB)"], abs=0.02)
    assert z.shape[1:] == (12, 19, 29) and summary == "**chelsea.png**: 451 x 300 px"


def test_image_reconstruction_without_fsq(served, converted_dirs):
    cont, disc, *_, table, _ = _predict(served, str(converted_dirs["plain"]), Path(skimage_file()),
                                        api_name="/reconstruct_image")
    assert disc is None and list(_table(table)) == ["continuous"]
    assert psnr(load_image(cont[1]), load_image(cont[0])) == pytest.approx(_table(table)["continuous"]["PSNR (dB)"],
                                                                          abs=1e-3)


@pytest.mark.parametrize("discrete", [False, True])
def test_video_reconstruction(served, converted_dirs, clip, discrete):
    import av

    video, plot, metrics = _predict(served, str(converted_dirs["fsq"]), clip, discrete, api_name="/reconstruct_video")
    path = video["video"] if isinstance(video, dict) else video
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    rec_file, _ = load_video(path)
    x, _ = load_video(clip)
    assert rec_file.shape == x.shape == (1, 3, 6, 64, 112)
    model = _model(converted_dirs)
    with torch.inference_mode():
        rec = model(x).sample if discrete else model.decode(model.encode(x).latent_dist.mode()).sample[:, :, :6]
    direct = [psnr(rec[:, :, t].clamp(-1, 1), x[:, :, t]) for t in range(6)]
    assert metrics["frame_psnr"] == pytest.approx(direct, abs=0.02)
    assert [row[1] for row in plot["data"]] == pytest.approx(metrics["frame_psnr"])
    assert psnr(rec_file, x) == pytest.approx(metrics["psnr"], abs=1.0)  # H.264 at crf 18 loses a little
    assert metrics["frames"] == 6 and metrics["mode"] == ("discrete" if discrete else "continuous")


def test_mesh_to_splat(served, converted_dirs, parity_dir):
    from atoken_diffusers.conversion.original_gaussian_decoder import load_original_gaussian_decoder
    from atoken_diffusers.three_d.gaussians import Gaussians
    from atoken_diffusers.three_d.pipeline import reconstruct_mesh
    from tests.test_three_d import media_mesh

    mesh = media_mesh("Bunny.obj")
    splat, renders, metrics = _predict(served, str(converted_dirs["fsq"]), Path(mesh), 4, 1, 64,
                                       api_name="/reconstruct_mesh")
    gaussians = Gaussians.load_ply(splat)
    assert len(gaussians) == metrics["gaussians"] == 32 * metrics["voxels"] > 0
    assert load_image(renders).shape == (1, 3, 2 * 64 + 4, 64)
    gs = load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml")
    direct = reconstruct_mesh(mesh, _model(converted_dirs), gs, num_views=4, eval_views=1, size=64)
    assert metrics["psnr"] == pytest.approx(direct.psnr, abs=1e-3)


def test_tokens(served, converted_dirs):
    path = skimage_file("chelsea.png")
    maps, usage, hist = _predict(served, str(converted_dirs["fsq"]), Path(path), api_name="/tokens")
    with torch.inference_mode():
        indices = _model(converted_dirs).tokenize(load_image(path))
    assert len(maps) == 2 and maps[0]["caption"] == "codebook 0"
    expected = visuals.index_colours(indices[0, 1].numpy()).repeat(16, 0).repeat(16, 1)
    assert np.array_equal(np.asarray(_png(maps[1]["image"])), expected)
    rows = {row[0]: dict(zip(usage["headers"], row)) for row in usage["data"]}
    for k in range(2):
        used = indices[0, k].unique().numel()
        assert rows[k]["codes used"] == used and rows[k]["fraction used"] == pytest.approx(used / 4096)
    assert sum(row[2] for row in hist["data"]) == indices.numel()


def _png(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_zero_shot(served, converted_dirs):
    from atoken_diffusers.understanding import TextTower, ZeroShotClassifier

    path = skimage_file("astronaut.png")
    out = _predict(served, str(converted_dirs["fsq"]), Path(path), "cat, dog, rocket", 2, api_name="/classify")
    tower = TextTower.from_pretrained(served[1]["text"])
    clf = ZeroShotClassifier(_model(converted_dirs), tower, ["cat", "dog", "rocket"])
    with torch.inference_mode():
        direct = clf.classify(load_image(path), top_k=2)[0]
    assert [(c["label"], c["confidence"]) for c in out["confidences"]] == [
        (label, pytest.approx(p, rel=1e-4, abs=1e-12)) for label, p in direct]


def test_bad_uploads_give_messages_and_the_app_keeps_serving(served, converted_dirs, clip, tmp_path):
    from gradio_client.exceptions import AppError

    model = str(converted_dirs["fsq"])
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture\n")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    no_faces = tmp_path / "points.obj"
    no_faces.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    cases = [((model, fake), "/reconstruct_image", "not an image this demo can read"),
             ((model, truncated, False), "/reconstruct_video", "not a video this demo can read"),
             ((model, no_faces, 4, 1, 64), "/reconstruct_mesh",
              "points.obj' (holds no triangle mesh|has vertices but no faces)"),
             ((model, fake), "/tokens", "not an image this demo can read"),
             (("", Path(skimage_file())), "/reconstruct_image", "No AToken model selected")]
    for args, api, message in cases:
        with pytest.raises(AppError, match=message) as caught:
            _predict(served, *args, api_name=api)
        assert "Traceback" not in str(caught.value)
    # Still serving, and serving right: the reported score is the one of the image it returns.
    cont, *_, table, _ = _predict(served, model, Path(skimage_file()), api_name="/reconstruct_image")
    assert psnr(load_image(cont[1]), load_image(skimage_file())) == pytest.approx(
        _table(table)["continuous"]["PSNR (dB)"], abs=1e-3)


def test_without_model_or_extras_the_page_explains(monkeypatch, parity_dir):
    from atoken_diffusers.demo import DemoInputError, ModelStore
    from atoken_diffusers.demo.models import NO_MODEL
    from atoken_diffusers.demo.ui import NO_GENERATION, build_demo

    monkeypatch.setattr("atoken_diffusers.demo.models.default_model_dir", lambda discrete=False: None)
    monkeypatch.setattr("atoken_diffusers.demo.models.default_gs_decoder_dir", lambda: None)
    store = ModelStore()
    app = build_demo(store)
    texts = [getattr(block, "value", None) for block in app.blocks.values()]
    assert NO_MODEL in texts and NO_GENERATION in texts
    assert any(isinstance(t, str) and "--gs-decoder" in t for t in texts)
    assert any(isinstance(t, str) and "--text-model" in t for t in texts)
    with pytest.raises(DemoInputError, match="No AToken model selected"):
        store.autoencoder(None)
    with pytest.raises(DemoInputError, match="does not exist"):
        store.autoencoder("/nonexistent/model")
    with pytest.raises(DemoInputError, match="checkpoint file.*atoken convert"):
        store.autoencoder(str(parity_dir / "atoken.pt"))
    locked = ModelStore(["/some/listed"], allow_paths=False)
    with pytest.raises(DemoInputError, match="not one of this demo's models"):
        locked.autoencoder("/elsewhere")


def test_embedded_default_is_listed_first(monkeypatch, converted_dirs):
    from atoken_diffusers.demo import ModelStore

    monkeypatch.setattr("atoken_diffusers.demo.models.default_model_dir",
                        lambda discrete=False: converted_dirs["fsq" if discrete else "plain"])
    store = ModelStore(["~/mine"])
    assert store.choices() == [("plain (embedded, continuous)", str(converted_dirs["plain"])),
                               ("fsq (embedded, FSQ tokens)", str(converted_dirs["fsq"])),
                               (str(Path("~/mine").expanduser()), str(Path("~/mine").expanduser()))]
    assert store.default == str(converted_dirs["plain"])


def test_cli_parser_and_script(monkeypatch, capsys):
    from atoken_diffusers.cli import demo

    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--model", "a", "--model", "b"])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", None, False, ["a", "b"])
    assert args.func is demo.run
    monkeypatch.setattr(sys, "argv", ["demos/app.py", "--help"])
    with pytest.raises(SystemExit) as done:  # the script as `python demos/app.py --help` runs it
        runpy.run_path(str(REPO / "demos" / "app.py"), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--gs-decoder" in out and "--text-model" in out and "--share" in out


def test_visuals():
    z = torch.zeros(1, 12, 4, 5)
    z[0, 0] = torch.arange(20.0).view(4, 5)  # one direction of variation: red ramps, green and blue stay flat
    pca = visuals.latent_pca(z)
    assert pca.shape == (4, 5, 3) and pca.dtype == np.uint8
    red = pca[..., 0].astype(int).ravel()
    assert abs(np.corrcoef(red, np.arange(20))[0, 1]) > 0.99
    assert visuals.latent_pca(torch.zeros(1, 12, 2, 2)).max() == 0
    colours = visuals.index_colours(np.arange(4096)).reshape(-1, 3)
    assert len({tuple(c) for c in colours}) == 4096
    idx = torch.tensor([[[[1, 1], [2, 3]], [[0, 0], [0, 0]]]])
    usage = visuals.codebook_usage(idx, 16)
    assert [u["codes used"] for u in usage] == [3, 1] and usage[1]["perplexity"] == pytest.approx(1.0)
    heat = visuals.error_map(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5))
    assert heat.shape == (2, 2, 3) and (heat == visuals.colour_ramp(np.array(1.0))).all()
