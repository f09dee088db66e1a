"""What each tab of the demo computes, as plain functions returning arrays, numbers and file paths (no UI).

Scores are taken on what the user sees: reconstructions are rounded to 8-bit pixels before PSNR/SSIM, so the PSNR
of the shown (PNG) images equals the reported one. ``progress`` is any ``progress(fraction, desc=...)`` callable
(e.g. ``gradio.Progress``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..utils.media import save_video, to_tensor, to_uint8
from ..utils.metrics import psnr, ssim
from . import visuals
from .inputs import DemoInputError, friendly_path_error


def _noop(*_args, **_kwargs) -> None:
    pass


def shown(x: torch.Tensor) -> torch.Tensor:
    """Pixels as an 8-bit file will hold them: clamped to [-1, 1] and rounded to 256 levels."""
    return to_tensor(to_uint8(x))


def scores(rec: torch.Tensor, x: torch.Tensor) -> dict:
    return {"psnr": round(psnr(rec, x), 4), "ssim": round(ssim(rec, x), 4)}


def _require_fsq(model):
    if model.quantizer is None:
        raise DemoInputError("This model has no FSQ quantizer (use_quantizer is off), so it has no discrete tokens; "
                             "choose an FSQ model such as So/D.")
    return model.quantizer


def fsq_indices(model, z: torch.Tensor) -> torch.Tensor:
    """FSQ indices (B, K, ...) of posterior means (B, C, ...), as ``model.tokenize`` gives them."""
    return _require_fsq(model).quantize_channels_first(z)[1]


def decode_like(model, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Decode latents and crop to the input's size (frames, height, width), rounded as shown."""
    rec = model.decode(z.to(model.dtype)).sample.float().cpu()
    rec = rec[..., : x.shape[-2], : x.shape[-1]]
    return shown(rec[:, :, : x.shape[2]] if x.ndim == 5 else rec)


IMAGE_TABLE_COLUMNS = ("reconstruction", "PSNR (dB)", "SSIM", "latent grid", "per cell")


@dataclass
class ImageResult:
    """uint8 (H, W, 3) pictures and the scores of the shown reconstructions: ``metrics`` holds
    {"continuous": {"psnr", "ssim"}, "discrete": ... (FSQ models), "latent": [C, h, w]} and ``table`` one row per
    reconstruction in :data:`IMAGE_TABLE_COLUMNS` order, for display."""

    original: np.ndarray
    continuous: np.ndarray
    discrete: np.ndarray | None
    error: np.ndarray
    latent: np.ndarray
    metrics: dict = field(default_factory=dict)
    table: list[list] = field(default_factory=list)


def image_table(metrics: dict, quantizer=None) -> list[list]:
    """Rows of (reconstruction, PSNR, SSIM, latent grid "h x w", what one cell holds) for ``reconstruct_image``'s
    metrics: the continuous latent and, when scored, the FSQ tokens of ``quantizer``."""
    channels, h, w = metrics["latent"][:3]
    grid = f"{h} x {w}"
    rows = [["continuous", metrics["continuous"]["psnr"], metrics["continuous"]["ssim"], grid,
             f"{channels} channels"]]
    if "discrete" in metrics:
        rows.append(["FSQ tokens", metrics["discrete"]["psnr"], metrics["discrete"]["ssim"], grid,
                     f"{quantizer.num_codebooks} codebooks x {quantizer.codebook_size} codes"])
    return rows


@torch.inference_mode()
def reconstruct_image(model, x: torch.Tensor, progress=_noop) -> ImageResult:
    """Continuous (posterior mean) and, with a quantizer, discrete (FSQ) reconstructions of (1, 3, H, W) pixels,
    the error map of the continuous one, a PCA colour view of the latent, and their scores."""
    progress(0.1, desc="encoding")
    z = model.encode(x.to(model.device, model.dtype)).latent_dist.mode()
    progress(0.4, desc="decoding")
    cont = decode_like(model, z, x)
    metrics = {"continuous": scores(cont, x), "latent": list(z.shape[1:])}
    disc = None
    if model.quantizer is not None:
        progress(0.7, desc="decoding FSQ tokens")
        disc = decode_like(model, model.detokenize(fsq_indices(model, z)), x)
        metrics["discrete"] = scores(disc, x)
    latent = visuals.upscale(visuals.latent_pca(z), model.spatial_compression_ratio)[: x.shape[-2], : x.shape[-1]]
    progress(1.0, desc="done")
    table = image_table(metrics, model.quantizer)
    return ImageResult(to_uint8(x[0]), to_uint8(cont[0]), None if disc is None else to_uint8(disc[0]),
                       visuals.error_map(cont, x), latent, metrics, table)


@dataclass
class VideoResult:
    path: str
    frame_psnr: list[float]
    metrics: dict


@torch.inference_mode()
def reconstruct_video(model, x: torch.Tensor, fps: float, out_path, discrete: bool = False,
                      progress=_noop) -> VideoResult:
    """Reconstruct (1, 3, T, H, W) pixels (through FSQ tokens if ``discrete``), write a browser-playable H.264 mp4
    to ``out_path`` and score every frame."""
    progress(0.05, desc=f"encoding {x.shape[2]} frames")
    z = model.encode(x.to(model.device, model.dtype)).latent_dist.mode()
    if discrete:
        z = model.detokenize(fsq_indices(model, z))
    progress(0.4, desc="decoding")
    rec = decode_like(model, z, x)
    progress(0.8, desc="writing H.264")
    save_video(rec, out_path, fps=fps)
    frame_psnr = [round(psnr(rec[:, :, t], x[:, :, t]), 4) for t in range(x.shape[2])]
    metrics = {"mode": "discrete" if discrete else "continuous", **scores(rec, x),
               "mean_frame_psnr": round(float(np.mean(frame_psnr)), 4), "latent": list(z.shape[1:])}
    progress(1.0, desc="done")
    return VideoResult(os.fspath(out_path), frame_psnr, metrics)


@dataclass
class TokenResult:
    maps: list[np.ndarray]
    usage: list[dict]
    histogram: list[dict]


@torch.inference_mode()
def token_maps(model, x: torch.Tensor) -> TokenResult:
    """FSQ index maps of an image (one colour image per codebook, a latent cell drawn as its 16 x 16 pixels),
    codebook usage and a histogram of the codes."""
    size = _require_fsq(model).codebook_size
    indices = model.tokenize(x.to(model.device, model.dtype)).cpu()
    maps = [visuals.upscale(m, model.spatial_compression_ratio) for m in visuals.index_maps(indices)]
    return TokenResult(maps, visuals.codebook_usage(indices, size), visuals.code_histogram(indices, size))


@dataclass
class MeshResult:
    path: str
    renders: np.ndarray
    metrics: dict


@torch.no_grad()
def reconstruct_mesh_file(model, gs_decoder, mesh_path, out_path, views: int, eval_views: int, size: int,
                          progress=_noop) -> MeshResult:
    """Mesh -> voxels -> AToken -> Gaussians (.ply at ``out_path``), scored at held-out views; ``renders`` puts the
    mesh renders (top) over the Gaussian renders (bottom)."""
    from ..three_d.pipeline import reconstruct_mesh

    progress(0.05, desc=f"rendering {views} views, voxelising, encoding and decoding")
    try:
        result = reconstruct_mesh(mesh_path, model, gs_decoder, num_views=views, eval_views=eval_views, size=size)
    except (ValueError, FileNotFoundError) as err:
        raise DemoInputError(friendly_path_error(err, mesh_path)) from None
    progress(0.9, desc="writing .ply")
    result.gaussians.save_ply(out_path)
    rows = [visuals.side_by_side([to_uint8(v * 2 - 1) for v in views_]) for views_ in (result.targets, result.renders)]
    metrics = {"psnr": round(result.psnr, 4), "ssim": round(result.ssim, 4), "voxels": int(result.coords.shape[0]),
               "gaussians": len(result.gaussians), "views": views, "eval_views": eval_views, "size": size}
    progress(1.0, desc="done")
    return MeshResult(os.fspath(out_path), np.concatenate([rows[0], np.full_like(rows[0][:4], 255), rows[1]]), metrics)


def parse_labels(text: str) -> list[str]:
    labels = [s.strip() for s in (text or "").replace("\n", ",").split(",") if s.strip()]
    if not labels:
        raise DemoInputError("Write at least one label, e.g. 'cat, dog, rocket'.")
    return labels


@torch.inference_mode()
def zero_shot(model, tower, x: torch.Tensor, labels: list[str], top_k: int = 5) -> dict[str, float]:
    """Zero-shot label probabilities (SigLIP sigmoid, independent per label) of an image or a video, best first."""
    from ..understanding.zero_shot import ZeroShotClassifier

    try:
        clf = ZeroShotClassifier(model, tower, labels)
    except ValueError as err:
        raise DemoInputError(str(err)) from None
    return dict(clf.classify(x.to(model.device, model.dtype), top_k=top_k)[0])
