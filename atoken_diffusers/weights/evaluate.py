"""Held-out quality of an AToken model (by default the embedded one), each figure beside the linear baseline measured
in the same run on the same inputs:

    python -m atoken_diffusers.weights.evaluate [--model DIR] [--discrete-model DIR] [--gs-decoder DIR] [--json OUT]

- images: 10 photographs never seen in training (scikit-image ``chelsea``, ``coffee``, ``rocket``, ``astronaut``,
  ``motorcycle_left``; gradio ``lion``, ``tower``, ``cheetah``, ``bus``, ``groot``), shorter side resized to 256
  (bilinear, antialiased) and centre-cropped: PSNR, SSIM and the patch-grid ratio of the model, of its FSQ variant and
  of PCA-48 (48 floats per 16 x 16 patch, fitted on the training photographs; ``weights/baseline/``);
- video: gradio ``a.mp4``, first 16 frames at 256 x 256, beside PCA-48 on 4 x 16 x 16 patches fitted on the training
  clips;
- mesh: gradio ``Duck.glb``, 3D PSNR at 8 views between the 24 packing views.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..evaluation.autoencoders import reconstruct_atoken
from ..evaluation.datasets import Item, Protocol, prepare, square
from ..evaluation.metrics import pixel_scores
from ..utils.atomic import write_atomically
from ..utils.media_sets import bundled_folder
from ..utils.metrics import psnr, ssim
from .baseline import PCACodec, grid_ratio
from .held_out import HELD_OUT_IMAGES, HELD_OUT_MESH, HELD_OUT_PATTERNS, HELD_OUT_VIDEO, IMAGE_PCA, VIDEO_PCA

__all__ = [
    "HELD_OUT_IMAGES",
    "HELD_OUT_MESH",
    "HELD_OUT_PATTERNS",
    "HELD_OUT_VIDEO",
    "IMAGE_PCA",
    "VIDEO_PCA",
    "evaluate_all",
    "evaluate_images",
    "evaluate_images_pca",
    "evaluate_mesh",
    "evaluate_video",
    "held_out_clip",
    "held_out_image",
    "image_table",
    "main",
    "square",
]



def held_out_image(bundle: str, name: str) -> torch.Tensor:
    """A bundled image as (1, 3, 256, 256) in [-1, 1]."""
    return prepare(Item("images", bundled_folder(bundle) / name, name), Protocol(256, "crop")).x


def held_out_clip(frames: int = 16) -> torch.Tensor:
    """The held-out clip's first ``frames`` frames as (1, 3, T, 256, 256) in [-1, 1] (``atoken evaluate``'s video
    protocol)."""
    path = bundled_folder(HELD_OUT_VIDEO[0]) / HELD_OUT_VIDEO[1]
    return prepare(Item("videos", path, path.name), Protocol(256, "crop", frames)).x


def _scores(rec: torch.Tensor, x: torch.Tensor) -> dict:
    return {**pixel_scores(rec, x), "grid": grid_ratio(rec)}


def _mean(per_image: dict, key: str) -> float:
    return sum(s[key] for s in per_image.values()) / len(per_image)


@torch.no_grad()
def evaluate_images(model, discrete: bool = False) -> dict:
    """PSNR/SSIM/grid ratio of every held-out image at 256 px and their means (through FSQ tokens when
    ``discrete``)."""
    scores = {}
    for bundle, name in HELD_OUT_IMAGES:
        x = held_out_image(bundle, name)
        scores[name] = _scores(reconstruct_atoken(model, x, discrete), x)
    return {"per_image": scores, **{k: _mean(scores, k) for k in ("psnr", "ssim", "grid")}}


@torch.no_grad()
def evaluate_images_pca(codec: PCACodec | None = None) -> dict:
    """The same table for the PCA-48 baseline, plus the grid ratio of the photographs themselves."""
    codec = codec or PCACodec.load(IMAGE_PCA)
    scores = {}
    for bundle, name in HELD_OUT_IMAGES:
        x = held_out_image(bundle, name)
        scores[name] = {**_scores(codec.reconstruct(x), x), "source_grid": grid_ratio(x)}
    return {"per_image": scores, **{k: _mean(scores, k) for k in ("psnr", "ssim", "grid", "source_grid")}}


@torch.no_grad()
def evaluate_video(model, frames: int = 16) -> dict:
    """PSNR/SSIM of the held-out clip's first ``frames`` frames at 256 x 256, beside PCA-48 fitted on the training
    clips."""
    clip = held_out_clip(frames)
    rec = model(clip).sample.clamp(-1, 1)
    return {"file": HELD_OUT_VIDEO[1], "frames": frames, "psnr": psnr(rec, clip), "ssim": ssim(rec, clip),
            "pca_psnr": psnr(PCACodec.load(VIDEO_PCA).reconstruct(clip), clip)}


@torch.no_grad()
def evaluate_mesh(model, gs_decoder) -> dict:
    """3D PSNR/SSIM of the held-out mesh through AToken and the Gaussian decoder (8 held-out views, 256 px)."""
    from ..three_d.pipeline import reconstruct_mesh

    result = reconstruct_mesh(bundled_folder(HELD_OUT_MESH[0]) / HELD_OUT_MESH[1], model, gs_decoder)
    return {"file": HELD_OUT_MESH[1], "psnr_3d": result.psnr, "ssim_3d": result.ssim,
            "gaussians": int(result.gaussians.xyz.shape[0])}


def evaluate_all(model_dir, discrete_dir=None, gs_dir=None) -> dict:
    """The whole held-out report of a model folder (plus its FSQ variant and Gaussian decoder when given)."""
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder

    model = AutoencoderAToken.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    report = {"model": Path(model_dir).name, "images_256": evaluate_images(model),
              "images_256_pca48": evaluate_images_pca(), "video": evaluate_video(model)}
    strength = model.config.get("deblock_strength", 0.0)
    if strength:  # the decoder's own output beside the deblocked one
        model.register_to_config(deblock_strength=0.0)
        report["images_256_raw"] = {k: v for k, v in evaluate_images(model).items() if k != "per_image"}
        model.register_to_config(deblock_strength=strength)
    if discrete_dir:
        discrete = AutoencoderAToken.from_pretrained(discrete_dir, torch_dtype=torch.float32).eval()
        report["images_256_discrete"] = evaluate_images(discrete, discrete=True)
    if gs_dir:
        gs = ATokenGaussianDecoder.from_pretrained(gs_dir, torch_dtype=torch.float32).eval()
        report["mesh"] = evaluate_mesh(model, gs)
    return report


def image_table(report: dict) -> str:
    """Markdown: one row per held-out photograph, PSNR / SSIM / grid ratio of PCA-48, the model and its FSQ variant."""
    pca, cont = report["images_256_pca48"], report["images_256"]
    fsq = report.get("images_256_discrete")
    head = "| 256 x 256 | PCA-48 PSNR / SSIM / grid | atoken-small | atoken-small-d (FSQ) | photo's grid |\n|---|---|---|---|---|\n"

    def cell(s):
        return f"{s['psnr']:.2f} / {s['ssim']:.3f} / {s['grid']:.2f}" if s else "-"

    rows = [f"| {name} | {cell(pca['per_image'][name])} | {cell(cont['per_image'][name])} | "
            f"{cell(fsq['per_image'][name] if fsq else None)} | {pca['per_image'][name]['source_grid']:.2f} |"
            for name in cont["per_image"]]
    rows.append(f"| **mean** | **{cell(pca)}** | **{cell(cont)}** | **{cell(fsq)}** | {pca['source_grid']:.2f} |")
    return head + "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    """Command line: print (and optionally save) the held-out report."""
    from . import default_gs_decoder_dir, default_model_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=default_model_dir())
    p.add_argument("--discrete-model", default=default_model_dir(discrete=True))
    p.add_argument("--gs-decoder", default=default_gs_decoder_dir())
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    if args.model is None:
        raise SystemExit("--model: no embedded model in this package; pass a converted folder.")
    report = evaluate_all(args.model, args.discrete_model, args.gs_decoder)
    text = json.dumps(report, indent=1)
    print(text)
    print(image_table(report))
    if args.json:
        write_atomically(args.json, text + "\n")
    return report


if __name__ == "__main__":
    main()
