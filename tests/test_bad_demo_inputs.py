"""Hostile and careless inputs to the Gradio demo: every one gets a one-line message, no server file is read and
nothing is written. Table-driven: each row is one case (issue "Hardened edges", items 7 and "Demo")."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gradio")
pytest.importorskip("trimesh")

from atoken_diffusers.demo import DemoInputError, Limits, ModelStore
from atoken_diffusers.demo.inputs import (
    IMAGE_SUFFIXES,
    MESH_SUFFIXES,
    check_upload,
    read_image,
    read_video,
)
from atoken_diffusers.demo.tasks import parse_labels
from atoken_diffusers.utils.media import save_video

NOT_UPLOADED = "was not uploaded to this demo, and files on the server are not read; upload"
SYSTEM_FILE = "/etc/passwd"  # exists on every POSIX system; must never be read


# ---- Limits: the numbers `atoken demo` passes in
LIMIT_CASES = [
    ({"upload_mb": 0}, r"Limits.upload_mb \(--max-upload-mb\) must be a positive number; got 0"),
    ({"upload_mb": -5.0}, r"Limits.upload_mb \(--max-upload-mb\) must be a positive number; got -5.0"),
    ({"image_side": 0}, r"Limits.image_side \(--max-image-side\) must be a positive number"),
    ({"video_frames": -1}, r"Limits.video_frames \(--max-frames\) must be a positive number; got -1"),
    ({"video_frames": True}, r"Limits.video_frames \(--max-frames\) must be a positive number; got True"),
    ({"video_seconds": float("nan")}, r"Limits.video_seconds \(--max-video-seconds\) must be a positive number"),
    ({"video_side": "256"}, r"Limits.video_side \(--max-video-side\) must be a positive number; got '256'"),
    ({"image_megapixels": 0.0}, r"Limits.image_megapixels must be a positive number"),
]


@pytest.mark.parametrize("kwargs, message", LIMIT_CASES, ids=[next(iter(k)) + str(i) for i, (k, _) in
                                                                enumerate(LIMIT_CASES)])
def test_bad_limits_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        Limits(**kwargs)
    assert "\n" not in str(caught.value)


# ---- files: each case builds its files under (cache, outside) and returns what to read and how
def _png(path: Path, side: int = 32) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), np.uint8)).save(path)
    return path


def _mp4(path: Path, frames: int = 2) -> Path:
    save_video(torch.zeros(1, 3, frames, 32, 32), path, fps=4)
    return path


def _link(cache: Path, target: Path) -> Path:
    link = cache / "link.png"
    link.symlink_to(target)
    return link


FILE_CASES = {
    # name: (build(cache, outside) -> path, reader, extra Limits, message)
    "server file by absolute path": (lambda c, o: _png(o / "secret.png"), "image", {}, NOT_UPLOADED + " an image"),
    "system file": (lambda c, o: SYSTEM_FILE, "image", {}, "'passwd' " + NOT_UPLOADED),
    "missing server file (existence not revealed)": (lambda c, o: o / "nothing.png", "image", {}, NOT_UPLOADED),
    "dot-dot out of the cache": (lambda c, o: str(c) + "/../" + _png(o / "up.png").relative_to(c.parent).as_posix(),
                                 "image", {}, NOT_UPLOADED),
    "symlink in the cache to a server file": (lambda c, o: _link(c, _png(o / "target.png")), "image", {},
                                              NOT_UPLOADED),
    "video outside the cache": (lambda c, o: _mp4(o / "clip.mp4"), "video", {}, NOT_UPLOADED + " a video"),
    "mesh outside the cache": (lambda c, o: shutil.copy(_png(o / "m.png"), o / "m.obj"), "mesh", {},
                               NOT_UPLOADED + " a mesh"),
    "no file": (lambda c, o: "", "image", {}, "Upload an image first"),
    "no video": (lambda c, o: None, "video", {}, "Upload a video first"),
    "upload gone from the cache": (lambda c, o: c / "gone.png", "image", {}, "missing on the server; upload it again"),
    "folder named like an image": (lambda c, o: (c / "dir.png").mkdir() or c / "dir.png", "image", {},
                                   "missing on the server"),
    "unknown image type": (lambda c, o: (c / "notes.txt").write_text("hi") and c / "notes.txt", "image", {},
                           "'notes.txt' is not an image file this demo reads; use one of"),
    "unknown mesh type": (lambda c, o: (c / "m.fbx").write_text("x") and c / "m.fbx", "mesh", {},
                          "'m.fbx' is not a mesh file this demo reads"),
    "empty file": (lambda c, o: (c / "empty.png").touch() or c / "empty.png", "image", {}, "'empty.png' is empty"),
    "file over the size limit": (lambda c, o: _png(c / "big.png", 256), "image", {"upload_mb": 0.001},
                                 r"'big.png' is 0.2 MB; the limit is 0.001 MB"),
    "text named .png": (lambda c, o: (c / "fake.png").write_text("text, not pixels") and c / "fake.png", "image",
                        {}, "'fake.png' is not an image this demo can read .*upload a PNG, JPEG or WebP"),
    "too many megapixels": (lambda c, o: _png(c / "wide.png", 200), "image", {"image_megapixels": 0.01},
                            "'wide.png' is 200 x 200 pixels; the limit is 0.01 megapixels"),
    "truncated video": (lambda c, o: (c / "cut.mp4").write_bytes(_mp4(o / "full.mp4").read_bytes()[:600])
                        and c / "cut.mp4", "video", {}, "'cut.mp4' is not a video this demo can read"),
    "video over the length limit": (lambda c, o: _mp4(c / "long.mp4", frames=8), "video", {"video_seconds": 0.5},
                                    r"'long.mp4' lasts 2.0 s; the limit is 0.5 s"),
}


def _read(kind: str, path, limits: Limits):
    if kind == "image":
        return read_image(path, limits)
    if kind == "video":
        return read_video(path, limits)
    return check_upload(path, limits, MESH_SUFFIXES, "a mesh")


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_files_get_one_line(case, tmp_path):
    build, kind, extra, message = FILE_CASES[case]
    cache, outside = tmp_path / "gradio-cache", tmp_path / "server"
    cache.mkdir()
    outside.mkdir()
    path = build(cache, outside)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    limits = Limits(input_folders=(str(cache),), **extra)
    with pytest.raises(DemoInputError, match=message) as caught:
        _read(kind, path, limits)
    text = str(caught.value)
    assert "\n" not in text and str(tmp_path) not in text  # one line, no server path
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_uploads_and_bundled_examples_are_read(tmp_path):
    """The other side of the boundary: files in the cache (also under sub-folders) and the examples themselves."""
    from atoken_diffusers.demo.examples import bundled_examples

    cache = tmp_path / "cache"
    (cache / "abc").mkdir(parents=True)
    examples = [p for ps in bundled_examples().values() for p in ps]
    limits = Limits(input_folders=(str(cache),), input_files=tuple(examples))
    x, info = read_image(_png(cache / "abc" / "up.png"), limits)
    assert x.shape == (1, 3, 32, 32) and info["file"] == "up.png"
    for example in examples:
        assert limits.readable(Path(example))
    if examples:  # the example's folder is not opened up, only the listed files
        assert not limits.readable(Path(examples[0]).parent / "__init__.py")
    assert set(IMAGE_SUFFIXES) >= {".png", ".jpg"}


# ---- the model selector and the label box
def _model_case(name):
    def run(parity_dir):
        store = ModelStore(["/some/listed"], allow_paths=name != "unlisted")
        value = {"empty": "  ", "unlisted": "/elsewhere", "checkpoint": str(parity_dir / "atoken.pt"),
                 "missing": "/nonexistent/model"}[name]
        store.autoencoder(value)
    return run


SELECTOR_CASES = [
    ("empty", "No AToken model selected"),
    ("unlisted", "'/elsewhere' is not one of this demo's models; choose one from the list"),
    ("checkpoint", "'atoken.pt' is a checkpoint file; the demo loads converted folders: run `atoken convert"),
    ("missing", "does not exist"),
]


@pytest.mark.parametrize("name, message", SELECTOR_CASES)
def test_bad_model_choices_get_one_line(name, message, parity_dir):
    with pytest.raises(DemoInputError, match=message) as caught:
        _model_case(name)(parity_dir)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["", " , ,\n", None])
def test_empty_labels_are_named(text):
    with pytest.raises(DemoInputError, match="Write at least one label"):
        parse_labels(text)


# ---- through the served app's API: Gradio passes a FileData payload's path through when its meta tag is missing
@pytest.fixture(scope="module")
def app(tmp_path_factory, converted_dirs):
    from atoken_diffusers.demo.ui import OutputFolder, serve
    from tests.text_models import make_siglip_text_tower

    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio-cache"))
        text = make_siglip_text_tower(["cat", "dog"], root / "text")
        outputs = OutputFolder()
        demo, url = serve(ModelStore([str(converted_dirs["fsq"])], text_model=text), block=False, outputs=outputs)
        yield url, root, outputs
        demo.close()


def call_raw(url: str, api: str, data: list) -> tuple[str, dict]:
    """POST to Gradio's HTTP API as any script could, bypassing gradio_client's upload: (event, payload)."""
    import httpx

    event_id = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    lines = httpx.get(f"{url}gradio_api/call/{api}/{event_id}", timeout=120).text.splitlines()
    event = next(line[len("event: "):] for line in lines if line.startswith("event: ") and "heartbeat" not in line)
    payload = json.loads(next(line[len("data: "):] for line in reversed(lines) if line.startswith("data: ")))
    return event, payload


def _file(path, meta: bool = False) -> dict:
    return {"path": str(path), **({"meta": {"_type": "gradio.FileData"}} if meta else {})}


GRADIO_REFUSAL = "Cannot move .* to the gradio cache dir because it was not uploaded by a user"
GRADIO_VALIDATION = "The 'meta' field must be explicitly provided"  # gr.File validates its payload (multi-line text)
API_CASES = {
    # name: (api, data after the model, message, whether the message is one line). gr.Image (image, tokens) passes
    # an untagged payload's path through, which only the app's own check stops; gr.File refuses it itself.
    "image: server PNG": ("reconstruct_image", lambda s: [_file(s)], NOT_UPLOADED + " an image", True),
    "image: system file": ("reconstruct_image", lambda s: [_file(SYSTEM_FILE)], "'passwd' " + NOT_UPLOADED, True),
    "image: tagged payload": ("reconstruct_image", lambda s: [_file(s, meta=True)], GRADIO_REFUSAL, True),
    "image: dot-dot out of the cache": ("reconstruct_image", lambda s: [_file(f"{s.parent}/gradio-cache/../{s.name}")],
                                        NOT_UPLOADED, True),
    "tokens: server PNG": ("tokens", lambda s: [_file(s)], NOT_UPLOADED + " an image", True),
    "tokens: system file": ("tokens", lambda s: [_file(SYSTEM_FILE)], NOT_UPLOADED, True),
    "video: tagged payload": ("reconstruct_video", lambda s: [_file(s.with_suffix(".mp4"), meta=True), False],
                              GRADIO_REFUSAL, True),
    "video: untagged payload": ("reconstruct_video", lambda s: [_file(s.with_suffix(".mp4")), False],
                                GRADIO_VALIDATION, False),
    "mesh: tagged payload": ("reconstruct_mesh", lambda s: [_file(s.with_suffix(".obj"), meta=True), 4, 1, 64],
                             GRADIO_REFUSAL, True),
    "mesh: untagged payload": ("reconstruct_mesh", lambda s: [_file(s.with_suffix(".obj")), 4, 1, 64],
                               GRADIO_VALIDATION, False),
    "classify: tagged payload": ("classify", lambda s: [_file(s, meta=True), "cat, dog", 2], GRADIO_REFUSAL, True),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_refuses_server_files(case, app, converted_dirs):
    url, root, outputs = app
    secret = _png(root / "secret.png")
    for suffix in (".mp4", ".obj"):
        shutil.copy(secret, secret.with_suffix(suffix))
    api, data, message, one_line = API_CASES[case]
    cache = root / "gradio-cache"
    cached_before = sorted(cache.rglob("*")) if cache.exists() else []
    event, payload = call_raw(url, api, [str(converted_dirs["fsq"]), *data(secret)])
    assert event == "error" and re.search(message, payload["error"] or ""), payload
    assert ("\n" not in payload["error"]) == one_line
    assert list(outputs.root.iterdir()) == []  # no reconstruction written
    assert (sorted(cache.rglob("*")) if cache.exists() else []) == cached_before  # the server file was not copied
