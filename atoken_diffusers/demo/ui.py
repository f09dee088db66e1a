"""The Gradio app: one tab per thing AToken does, all calling :mod:`atoken_diffusers.demo.tasks`.

Every event has an API name (``/reconstruct_image``, ``/reconstruct_video``, ``/reconstruct_mesh``, ``/tokens``,
``/classify``, ``/model_info``) and takes the model selector's value first, so ``gradio_client`` can drive it. Errors
reach the page as messages (``gr.Error``), never as stack traces; the server keeps serving."""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pandas as pd

from ..utils.media import VIDEO_SUFFIXES
from . import tasks
from .examples import bundled_examples
from .inputs import (
    IMAGE_SUFFIXES,
    MESH_SUFFIXES,
    DemoInputError,
    Limits,
    check_upload,
    read_image,
    read_video,
)
from .models import NO_MODEL, ModelStore

logger = logging.getLogger(__name__)

# Generator pipelines add their tab here: register_generation_tab("Text to image", build), where build(store,
# model_box) creates the tab's components and events inside the open ``gr.Tab``.
GENERATION_TABS: dict[str, Callable[[ModelStore, gr.Dropdown], None]] = {}
HEAVY = "atoken"  # events sharing this id run one at a time (with the queue's default limit of 1): bounded memory
QUEUE_SIZE = 64  # requests waiting beyond this are refused by Gradio ("queue is full") instead of piling up
NO_GENERATION = ("No generator pipeline is configured yet. Pipelines that generate AToken latents (text to image, "
                 "image to video, ...) add a tab here with `atoken_diffusers.demo.ui.register_generation_tab`.")


def register_generation_tab(title: str, build: Callable[[ModelStore, gr.Dropdown], None]) -> None:
    GENERATION_TABS[title] = build


def friendly(fn):
    """Show a problem as a message in the page: the user's mistakes as written, anything else as one line (the
    traceback goes to the server log)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except DemoInputError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:
            logger.exception("demo request failed")
            raise gr.Error(f"The request failed: {type(err).__name__}: {err}", print_exception=False) from None

    return wrapper


class OutputFolder:
    """Files the app writes (videos, splats), in one temporary folder holding at most ``keep`` of them."""

    def __init__(self, keep: int = 64):
        self.root = Path(tempfile.mkdtemp(prefix="atoken-demo-"))
        self.keep = keep
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def new(self, stem: str, suffix: str) -> Path:
        files = sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.keep + 1)]:
            old.unlink(missing_ok=True)
        return self.root / f"{Path(stem).stem[:40]}-{uuid.uuid4().hex[:8]}{suffix}"


def _file_input(label: str, suffixes, elem_id: str) -> gr.File:
    return gr.File(label=label, file_types=sorted(suffixes), type="filepath", elem_id=elem_id)


def _examples(paths: list[str], inputs, label: str = "Examples") -> None:
    if paths:
        gr.Examples([[p] for p in paths], inputs=inputs, label=label, cache_examples=False)


def _image_input(elem_id: str, height: int) -> gr.Image:
    """An image upload box with preview that hands the handler the uploaded file itself, unopened, so that
    :func:`.inputs.read_image` checks it and explains what is wrong: gr.Image's own reading would fail first on a
    damaged or non-image file, with a bare "Error". (Set on the instance: a gr.Image subclass would make Gradio write a
    .pyi stub next to this module at import.)"""
    box = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=height,
                   elem_id=elem_id)
    gradio_reading = box.preprocess

    def uploaded_file(payload):
        if payload is None or payload.path is None:  # a pasted data URL: let gr.Image write it to a file
            return gradio_reading(payload)
        return payload.path

    box.preprocess = uploaded_file
    return box


def _image_tab(store: ModelStore, limits: Limits, model_box, examples) -> None:
    gr.Markdown("Reconstruct a picture through the continuous latent and, for FSQ models, the discrete tokens; drag "
                "the sliders to compare with the original. " + limits.image_text())
    with gr.Row():
        upload = _image_input("image-input", height=360)
        with gr.Column():
            run = gr.Button("Reconstruct", variant="primary", elem_id="image-run")
            summary = gr.Markdown(elem_id="image-summary")
            table = gr.Dataframe(headers=list(tasks.IMAGE_TABLE_COLUMNS), label="Scores of the shown reconstructions",
                                 interactive=False, wrap=True, column_widths=["25%", "15%", "12%", "16%", "32%"],
                                 elem_id="image-metrics")
    with gr.Row():
        continuous = gr.ImageSlider(label="Original | continuous reconstruction", format="png", type="filepath",
                                    elem_id="image-slider")
        discrete = gr.ImageSlider(label="Original | FSQ tokens reconstruction (FSQ models only)", format="png",
                                  type="filepath", elem_id="image-slider-fsq")
    with gr.Row():
        error = gr.Image(label="Error map of the continuous reconstruction (|error|, bright = 0.25)", format="png",
                         elem_id="image-error")
        latent = gr.Image(label="Latent: 3 principal components of the channels as RGB", format="png")
    _examples(examples, [upload])

    @friendly
    def reconstruct(model_name, path, progress=gr.Progress()):
        model = store.autoencoder(model_name)
        x, info = read_image(path, limits)
        r = tasks.reconstruct_image(model, x, progress)
        (h, w), (uh, uw) = info["size"], info["uploaded_size"]
        text = f"**{info['file']}**: {w} x {h} px" + (f" (scaled down from {uw} x {uh})" if (h, w) != (uh, uw) else "")
        fsq = None if r.discrete is None else (r.original, r.discrete)
        table_value = pd.DataFrame(r.table, columns=list(tasks.IMAGE_TABLE_COLUMNS))
        return (r.original, r.continuous), fsq, r.error, r.latent, table_value, text

    done = run.click(reconstruct, [model_box, upload], [continuous, discrete, error, latent, table, summary],
                     api_name="reconstruct_image", concurrency_id=HEAVY)
    # The FSQ slider shows only for FSQ models; a page-only step, so that API results stay plain values.
    done.success(lambda pair: gr.ImageSlider(visible=pair is not None), discrete, discrete, api_visibility="private")


def _video_tab(store: ModelStore, limits: Limits, model_box, examples, outputs: OutputFolder) -> None:
    gr.Markdown("Reconstruct a clip; the result is an H.264 MP4 written by this app. " + limits.video_text())
    with gr.Row():
        upload = _file_input("Video", VIDEO_SUFFIXES, "video-input")
        with gr.Column():
            discrete = gr.Checkbox(label="Through FSQ tokens (FSQ models only)", value=False)
            run = gr.Button("Reconstruct", variant="primary", elem_id="video-run")
    with gr.Row():
        video = gr.Video(label="Reconstruction", elem_id="video-output")
        plot = gr.LinePlot(x="frame", y="PSNR (dB)", title="PSNR per frame", label="PSNR per frame")
    metrics = gr.JSON(label="Metrics")
    _examples(examples, [upload])

    @friendly
    def reconstruct(model_name, path, through_tokens, progress=gr.Progress()):
        model = store.autoencoder(model_name)
        progress(0, desc="reading the video")
        x, fps, info = read_video(path, limits)
        r = tasks.reconstruct_video(model, x, fps, outputs.new(info["file"], ".mp4"), bool(through_tokens), progress)
        frames = pd.DataFrame({"frame": range(len(r.frame_psnr)), "PSNR (dB)": r.frame_psnr})
        return r.path, frames, {**info, **r.metrics, "frame_psnr": r.frame_psnr}

    run.click(reconstruct, [model_box, upload, discrete], [video, plot, metrics], api_name="reconstruct_video",
              concurrency_id=HEAVY)


def _mesh_tab(store: ModelStore, limits: Limits, model_box, examples, outputs: OutputFolder) -> None:
    if not store.gs_decoder_path:
        gr.Markdown("**3D needs a Gaussian decoder.** Convert the official `3d_decode_gs.pt` with `atoken convert "
                    "--gs-decoder 3d_decode_gs.pt --config 3d_decode_gs.yaml --output GS_DIR`, then start the demo "
                    "with `--gs-decoder GS_DIR`.")
        return
    gr.Markdown("Mesh -> multi-view renders -> 64^3 voxel tokens -> AToken -> Gaussian splat, scored against the "
                "mesh's own renders at held-out views (3D PSNR). " + limits.mesh_text())
    with gr.Row():
        upload = _file_input("Mesh", MESH_SUFFIXES, "mesh-input")
        with gr.Column():
            views = gr.Slider(4, 48, value=24, step=1, label="Packing views")
            eval_views = gr.Slider(1, 16, value=4, step=1, label="Held-out views scored")
            size = gr.Slider(64, 512, value=256, step=32, label="Render size (px)")
            run = gr.Button("Reconstruct", variant="primary", elem_id="mesh-run")
    with gr.Row():
        splat = gr.Model3D(label="Gaussian splat (.ply)", elem_id="mesh-output")
        renders = gr.Image(label="Held-out views: mesh (top) vs Gaussians (bottom)", format="png")
    metrics = gr.JSON(label="3D PSNR / SSIM")
    _examples(examples, [upload])

    @friendly
    def reconstruct(model_name, path, n_views, n_eval, px, progress=gr.Progress()):
        model = store.autoencoder(model_name)
        path = check_upload(path, limits, MESH_SUFFIXES, "a mesh")
        gs = store.gaussian_decoder(model.device)
        r = tasks.reconstruct_mesh_file(model, gs, path, outputs.new(path.name, ".ply"), int(n_views), int(n_eval),
                                        int(px), progress)
        return r.path, r.renders, r.metrics

    run.click(reconstruct, [model_box, upload, views, eval_views, size], [splat, renders, metrics],
              api_name="reconstruct_mesh", concurrency_id=HEAVY)


def _tokens_tab(store: ModelStore, limits: Limits, model_box, examples) -> None:
    gr.Markdown("FSQ tokens of a picture (FSQ models only): one colour per code, one map per codebook, and how much "
                "of each codebook the picture uses. " + limits.image_text())
    with gr.Row():
        upload = _image_input("tokens-input", height=300)
        run = gr.Button("Tokenize", variant="primary")
    maps = gr.Gallery(label="Index maps (one per codebook)", columns=4, format="png")
    usage = gr.Dataframe(label="Codebook usage")
    hist = gr.BarPlot(x="codes", y="count", color="codebook", title="Codes used (64 ranges of indices)",
                      label="Code histogram")
    _examples(examples, [upload])

    @friendly
    def tokenize(model_name, path):
        model = store.autoencoder(model_name)
        x, _ = read_image(path, limits)
        r = tasks.token_maps(model, x)
        captions = [(m, f"codebook {k}") for k, m in enumerate(r.maps)]
        return captions, pd.DataFrame(r.usage), pd.DataFrame(r.histogram)

    run.click(tokenize, [model_box, upload], [maps, usage, hist], api_name="tokens", concurrency_id=HEAVY)


def _understanding_tab(store: ModelStore, limits: Limits, model_box, examples) -> None:
    if not store.text_model_path:
        gr.Markdown("**Zero-shot labels need a text tower.** Save a SigLIP2 text model and its tokenizer to a folder "
                    "(e.g. `google/siglip2-so400m-patch16-naflex` with transformers' `save_pretrained`) and start "
                    "the demo with `--text-model FOLDER`. Its embedding size must match the AToken encoder's.")
        return
    gr.Markdown("Zero-shot labels from AToken's pooled embedding and the SigLIP text tower (independent sigmoid "
                "probabilities). " + limits.image_text() + " " + limits.video_text())
    with gr.Row():
        upload = _file_input("Image or video", (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES), "classify-input")
        with gr.Column():
            labels = gr.Textbox(label="Labels (comma-separated)",
                                value="cat, dog, astronaut, rocket, coffee cup, horse")
            top_k = gr.Slider(1, 20, value=5, step=1, label="Top k")
            run = gr.Button("Classify", variant="primary")
    result = gr.Label(label="Labels")
    _examples(examples, [upload])

    @friendly
    def classify(model_name, path, text, k):
        model = store.autoencoder(model_name)
        names = tasks.parse_labels(text)
        is_video = Path(path or "").suffix.lower() in VIDEO_SUFFIXES
        x = read_video(path, limits)[0] if is_video else read_image(path, limits)[0]
        return tasks.zero_shot(model, store.text_tower(model.device), x, names, int(k))

    run.click(classify, [model_box, upload, labels, top_k], result, api_name="classify", concurrency_id=HEAVY)


def served_limits(limits: Limits, upload_folder: str, examples: dict[str, list[str]]) -> Limits:
    """``limits`` for the served app: files are read only from Gradio's upload cache and the bundled examples. Gradio
    hands a handler whatever ``path`` an API caller puts in a file payload that lacks its ``meta`` tag, so this check
    is the one that keeps server files out."""
    return replace(limits, input_folders=(upload_folder,), input_files=tuple(p for ps in examples.values() for p in ps))


def build_demo(store: ModelStore, limits: Limits = Limits(), outputs: OutputFolder | None = None) -> gr.Blocks:
    """The app; whatever ``limits.input_folders`` says, it reads files only from Gradio's upload cache
    (``GRADIO_TEMP_DIR``) and the bundled examples."""
    outputs = outputs or OutputFolder()
    examples = bundled_examples()
    demo = gr.Blocks(title="AToken demo", delete_cache=(3600, 3600))
    limits = served_limits(limits, demo.GRADIO_CACHE, examples)
    with demo:
        gr.Markdown("# AToken: one tokenizer for images, videos and 3D")
        with gr.Row():
            model_box = gr.Dropdown(store.choices(), value=store.default, label="Model (converted AToken folder)",
                                    allow_custom_value=store.allow_paths, scale=2, elem_id="model")
            info = gr.Markdown(store.describe(store.default) if store.default else NO_MODEL, elem_id="model-info")
        model_box.change(friendly(store.describe), model_box, info, api_name="model_info")
        with gr.Tab("Image"):
            _image_tab(store, limits, model_box, examples["images"])
        with gr.Tab("Video"):
            _video_tab(store, limits, model_box, examples["videos"], outputs)
        with gr.Tab("3D"):
            _mesh_tab(store, limits, model_box, examples["meshes"], outputs)
        with gr.Tab("Tokens"):
            _tokens_tab(store, limits, model_box, examples["images"])
        with gr.Tab("Understanding"):
            _understanding_tab(store, limits, model_box, examples["images"])
        with gr.Tab("Generation"):
            if not GENERATION_TABS:
                gr.Markdown(NO_GENERATION)
            for title, build in GENERATION_TABS.items():
                with gr.Tab(title):
                    build(store, model_box)
    return demo


def serve(store: ModelStore, limits: Limits = Limits(), host: str = "127.0.0.1", port: int | None = None,
          share: bool = False, block: bool = True, outputs: OutputFolder | None = None) -> tuple[gr.Blocks, str]:
    """Build and launch the app; returns it and its local URL (``block=False`` returns at once, for tests).
    Requests run one at a time (at most :data:`QUEUE_SIZE` waiting), so memory stays that of one request."""
    outputs = outputs or OutputFolder()
    demo = build_demo(store, limits, outputs)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    # show_error: Gradio's own refusals (a file payload naming a server path, a full queue) reach the caller as their
    # one-line message instead of a bare "error"; the app's handlers already turn everything into gr.Error messages.
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=not block,
                            max_file_size=int(limits.upload_mb * 1e6), allowed_paths=[str(outputs.root)],
                            show_error=True)
    if block:
        demo.block_thread()
    return demo, url
