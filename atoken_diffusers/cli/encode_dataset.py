"""``atoken encode-dataset DATA --model DIR --out DIR``: pre-encode a labelled media folder into latent/FSQ shards.

Works as is or under ``accelerate launch`` (each process encodes its own shards); an interrupted run resumes."""

from __future__ import annotations

import argparse

from .checks import POSITIVE_INT, SIDE
from .common import DTYPE_CHOICES, progress_enabled, torch_dtype


def add_parser(sub) -> None:
    p = sub.add_parser("encode-dataset", help="pre-encode an image (and video) folder into latent + FSQ token shards",
                       description="DATA has one sub-folder per class (ImageFolder convention). Writes safetensors "
                                   "shards and manifest.json to --out; a rerun skips finished shards. Several "
                                   "processes: `accelerate launch [--num_processes N] -m atoken_diffusers "
                                   "encode-dataset ...`.")
    p.add_argument("data", help="folder with one sub-folder of images per class")
    p.add_argument("--model", required=True, help="converted AToken folder")
    p.add_argument("--out", required=True, help="shard folder to write")
    p.add_argument("--resolution", type=SIDE, default=256, help="resize the shorter side, centre crop (multiple of 16)")
    p.add_argument("--shard-size", type=POSITIVE_INT, default=256, help="samples per shard")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="samples per encoder call")
    p.add_argument("--videos", action="store_true", help="also encode the videos (separate video shards)")
    p.add_argument("--frames", type=POSITIVE_INT, default=16, help="frames per video clip (multiple of 4)")
    p.add_argument("--text-model", help="local SigLIP2 text folder: also store pooled caption embeddings")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--overwrite", action="store_true", help="replace shards of a different dataset/model in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..generation.data.encode_dataset import encode_dataset

    try:
        summary = encode_dataset(args.data, args.model, args.out, resolution=args.resolution,
                                 shard_size=args.shard_size, batch_size=args.batch_size, videos=args.videos,
                                 frames=args.frames, text_model=args.text_model, overwrite=args.overwrite,
                                 dtype=torch_dtype(args.dtype), print_summary=True,
                                 progress=progress_enabled(args))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"atoken encode-dataset: {err}") from None
    return summary

