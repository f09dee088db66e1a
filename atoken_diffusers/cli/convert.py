"""`atoken convert`: official checkpoint (.pt + .yaml) -> diffusers folder (config.json + safetensors)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .checks import check_output
from .common import DTYPE_CHOICES, progress_enabled, torch_dtype
from .errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert an official AToken checkpoint into a diffusers folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="official autoencoder .pt file (e.g. atoken-soc.pt)")
    which.add_argument("--gs-decoder", help="official Gaussian decoder .pt file (3d_decode_gs.pt)")
    p.add_argument("--config", required=True, help="its YAML config (e.g. atoken-soc.yaml, 3d_decode_gs.yaml)")
    p.add_argument("--output", required=True, help="folder to write (config.json + diffusion_pytorch_model.safetensors)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32", help="storage dtype of the weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..utils.atomic import save_atomically
    from ..utils.progress import progress_bar

    source = args.gs_decoder or args.checkpoint
    check_output(args.output, None, inputs=[source, args.config], overwrite=args.overwrite, folder=True)
    if Path(args.output).exists() and not args.overwrite:  # before the minutes of loading, not after
        raise UsageError(f"--output {args.output} exists; pass --overwrite to replace it (the old folder stays until "
                         f"the new one is complete).")
    # two steps of very different length (unpickling + renaming the checkpoint, then writing safetensors): the bar shows
    # which one is running rather than a rate
    with progress_bar(total=2, desc=f"convert: loading {source}", unit="step", enabled=progress_enabled(args)) as bar:
        if args.gs_decoder:
            from ..conversion.original_gaussian_decoder import (
                load_original_gaussian_decoder,
            )

            model = load_original_gaussian_decoder(args.gs_decoder, args.config, torch_dtype=torch_dtype(args.dtype))
            detail = "Gaussian decoder"
        else:
            from ..models.autoencoder_atoken import AutoencoderAToken

            model = AutoencoderAToken.from_single_file(args.checkpoint, config=args.config,
                                                       torch_dtype=torch_dtype(args.dtype))
            fsq = "yes" if model.quantizer is not None else "no"
            detail = f"latent_channels={model.config.latent_channels}, fsq={fsq}"
        bar.set_description(f"convert: writing {args.output}")
        bar.update(1)
        out = save_atomically(model, args.output, overwrite=args.overwrite)
        bar.update(1)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n / 1e6:.1f}M parameters, {args.dtype}, {detail})")
