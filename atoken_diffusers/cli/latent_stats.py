"""``atoken latent-stats DATA --model DIR``: per-channel latent mean/std of a dataset, stored in the model config."""

from __future__ import annotations

import argparse
from pathlib import Path

from .checks import POSITIVE_INT, SIDE
from .common import DTYPE_CHOICES, info
from .errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("latent-stats", help="compute per-channel latent mean/std over a dataset and store them in "
                                            "the AToken config (latents_mean / latents_std)",
                       description="DATA is a shard folder of `atoken encode-dataset` (fast: no encoding), or "
                                   "image folders / files / globs / bundled sets (skimage, gradio:images) encoded "
                                   "on the fly.")
    p.add_argument("data", nargs="+", help="shard folder, or media folders/files/globs")
    p.add_argument("--model", required=True, help="converted AToken folder whose config.json receives the statistics")
    p.add_argument("--resolution", type=SIDE, default=256, help="media: resize + centre crop side (multiple of 16)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="media: samples per encoder call")
    p.add_argument("--videos", action="store_true", help="media: statistics of video latents instead of images")
    p.add_argument("--frames", type=POSITIVE_INT, default=16, help="media: frames per video clip")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dry-run", action="store_true", help="print the statistics without writing them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..generation.data.image_folder import check_resolution
    from ..generation.data.latent_stats import (
        stats_from_media,
        stats_from_shards,
        write_latent_stats,
    )
    from ..generation.data.shards import MANIFEST, read_manifest
    from .common import load_model

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"--model {args.model}: no config.json; pass a converted AToken folder (`atoken convert`).")
    try:
        if len(args.data) == 1 and (Path(args.data[0]) / MANIFEST).is_file():
            manifest = read_manifest(args.data[0])
            source = f"shards {args.data[0]}"
            mean, std = stats_from_shards(args.data[0], "videos" if args.videos else "images")
            if Path(manifest["model"]["path"]).resolve() != model_dir.resolve():
                info(args, f"note: the shards were encoded with {manifest['model']['path']}, not {model_dir}.")
        else:
            check_resolution(args.resolution)
            vae = load_model(str(model_dir), dtype=args.dtype, device=args.device)
            source = f"{len(args.data)} path(s)"
            with torch.inference_mode():
                mean, std = stats_from_media(vae, args.data, args.resolution, args.batch_size, args.videos, args.frames)
        if args.dry_run:
            print(f"latents_mean: {[round(float(v), 5) for v in mean]}")
            print(f"latents_std: {[round(float(v), 5) for v in std]}")
            return
        path = write_latent_stats(model_dir, mean, std)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"atoken latent-stats: {err}") from None
    print(f"wrote latents_mean/latents_std ({mean.numel()} channels, from {source}) to {path}; "
          f"std range {float(std.min()):.4g}..{float(std.max()):.4g}")
