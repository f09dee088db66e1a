"""Held-out quality of an AToken model (by default the embedded one): images at 256 x 256, a video clip, a mesh.

    python -m atoken_diffusers.weights.evaluate [--model DIR] [--discrete-model DIR] [--gs-decoder DIR] [--json OUT]

Held-out media (never seen in training; all installed by scikit-image and gradio): images skimage ``chelsea``,
``coffee``, ``rocket`` and gradio ``lion.jpg``, ``tower.jpg``; video gradio ``a.mp4`` (first 16 frames); mesh gradio
``Duck.glb`` (3D PSNR at 8 views between the 24 packing views).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..utils.media_sets import bundled_folder
from ..utils.media import load_image, load_video, resize_centre_crop
from ..utils.metrics import psnr, ssim

HELD_OUT_IMAGES = [("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "rocket.jpg"),
                   ("gradio:images", "lion.jpg"), ("gradio:images", "tower.jpg")]
HELD_OUT_VIDEO = ("gradio:videos", "a.mp4")
HELD_OUT_MESH = ("gradio:models3d", "Duck.glb")


def square(x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(..., 3, H, W) -> shorter side resized to ``size`` (bilinear, antialiased), centre-cropped, in [-1, 1]."""
    return resize_centre_crop(x, size, mode="bilinear").clamp(-1, 1)


def held_out_image(bundle: str, name: str) -> torch.Tensor:
    """A bundled image as (1, 3, 256, 256) in [-1, 1]."""
    return square(load_image(bundled_folder(bundle) / name))


@torch.no_grad()
def evaluate_images(model, discrete: bool = False) -> dict:
    """PSNR/SSIM of every held-out image at 256 px and their means (through FSQ tokens when ``discrete``)."""
    scores = {}
    for bundle, name in HELD_OUT_IMAGES:
        x = held_out_image(bundle, name)
        rec = model.decode(model.detokenize(model.tokenize(x))).sample if discrete else model(x).sample
        scores[name] = {"psnr": psnr(rec, x), "ssim": ssim(rec, x)}
    return {"per_image": scores, "psnr": sum(s["psnr"] for s in scores.values()) / len(scores),
            "ssim": sum(s["ssim"] for s in scores.values()) / len(scores)}


@torch.no_grad()
def evaluate_video(model, frames: int = 16) -> dict:
    """PSNR/SSIM of the held-out clip's first ``frames`` frames at 256 x 256."""
    video, _ = load_video(bundled_folder(HELD_OUT_VIDEO[0]) / HELD_OUT_VIDEO[1], max_frames=frames)
    clip = square(video.transpose(1, 2)).transpose(1, 2)  # (1, 3, T, 256, 256)
    rec = model(clip).sample
    return {"file": HELD_OUT_VIDEO[1], "frames": frames, "psnr": psnr(rec, clip), "ssim": ssim(rec.transpose(1, 2).flatten(0, 1), clip.transpose(1, 2).flatten(0, 1))}


@torch.no_grad()
def evaluate_mesh(model, gs_decoder) -> dict:
    """3D PSNR/SSIM of the held-out mesh through AToken and the Gaussian decoder (8 held-out views, 256 px)."""
    from ..three_d.pipeline import reconstruct_mesh

    result = reconstruct_mesh(bundled_folder(HELD_OUT_MESH[0]) / HELD_OUT_MESH[1], model, gs_decoder)
    return {"file": HELD_OUT_MESH[1], "psnr_3d": result.psnr, "ssim_3d": result.ssim, "gaussians": int(result.gaussians.xyz.shape[0])}


def evaluate_all(model_dir, discrete_dir=None, gs_dir=None) -> dict:
    """The whole held-out report of a model folder (plus its FSQ variant and Gaussian decoder when given)."""
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder

    model = AutoencoderAToken.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    report = {"model": str(model_dir), "images_256": evaluate_images(model), "video": evaluate_video(model)}
    if discrete_dir:
        discrete = AutoencoderAToken.from_pretrained(discrete_dir, torch_dtype=torch.float32).eval()
        report["images_256_discrete"] = evaluate_images(discrete, discrete=True)
    if gs_dir:
        gs = ATokenGaussianDecoder.from_pretrained(gs_dir, torch_dtype=torch.float32).eval()
        report["mesh"] = evaluate_mesh(model, gs)
    return report


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
    if args.json:
        Path(args.json).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
