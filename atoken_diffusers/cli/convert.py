"""`atoken convert`: official checkpoint (.pt + .yaml) -> diffusers folder (config.json + safetensors)."""

from __future__ import annotations

import argparse

from .common import DTYPES


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert an official AToken checkpoint into a diffusers folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="official autoencoder .pt file (e.g. atoken-soc.pt)")
    which.add_argument("--gs-decoder", help="official Gaussian decoder .pt file (3d_decode_gs.pt)")
    p.add_argument("--config", required=True, help="its YAML config (e.g. atoken-soc.yaml, 3d_decode_gs.yaml)")
    p.add_argument("--output", required=True, help="folder to write (config.json + diffusion_pytorch_model.safetensors)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="storage dtype of the weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..utils.atomic import save_atomically

    if args.gs_decoder:
        from ..conversion.original_gaussian_decoder import load_original_gaussian_decoder

        model = load_original_gaussian_decoder(args.gs_decoder, args.config, torch_dtype=DTYPES[args.dtype])
        detail = "Gaussian decoder"
    else:
        from ..models.autoencoder_atoken import AutoencoderAToken

        model = AutoencoderAToken.from_single_file(args.checkpoint, config=args.config, torch_dtype=DTYPES[args.dtype])
        detail = f"latent_channels={model.config.latent_channels}, fsq={'yes' if model.quantizer is not None else 'no'}"
    out = save_atomically(model, args.output, overwrite=args.overwrite)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n / 1e6:.1f}M parameters, {args.dtype}, {detail})")
