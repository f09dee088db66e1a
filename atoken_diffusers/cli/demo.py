"""`atoken demo`: the Gradio app (images, videos, 3D, tokens, zero-shot labels) on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
from pathlib import Path

from .checks import PORT, POSITIVE_FLOAT, POSITIVE_INT, SIDE
from .common import DTYPE_CHOICES, info
from .errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=[],
                   help="converted AToken folder offered in the model selector (repeat for several; default: the "
                        "embedded model when the package ships one)")
    p.add_argument("--gs-decoder", help="converted Gaussian decoder folder: enables the 3D tab")
    p.add_argument("--text-model", help="local SigLIP2/SigLIP text model folder: enables zero-shot labels")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=PORT, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--max-upload-mb", type=POSITIVE_FLOAT, default=100.0, help="largest accepted upload")
    p.add_argument("--max-image-side", type=SIDE, default=1024, help="longer image sides are scaled down to this")
    p.add_argument("--max-frames", type=POSITIVE_INT, default=32, help="videos: reconstruct at most this many frames")
    p.add_argument("--max-video-seconds", type=POSITIVE_FLOAT, default=120.0, help="videos: refuse longer uploads")
    p.add_argument("--max-video-side", type=SIDE, default=256, help="videos: longer sides are scaled down to this")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="start the Gradio demo in the browser (needs the 'demo' extra: gradio)")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, block: bool = True):
    """Check the arguments, load the first model (so a bad --model fails here, not in the page) and serve."""
    try:
        from ..demo.ui import serve
    except ImportError as err:
        raise SystemExit(f"the demo needs gradio ({err}); pip install 'atoken-diffusers[demo]'.") from None
    from ..demo import DemoInputError, Limits, ModelStore

    for flag, folder in (("--gs-decoder", args.gs_decoder), ("--text-model", args.text_model)):
        if folder and not (Path(folder) / "config.json").is_file():
            raise UsageError(f"{flag} {folder}: not a converted folder (no config.json); pass the folder "
                             f"`atoken convert` wrote.")
    local = args.host in LOOPBACK and not args.share
    store = ModelStore(args.model, args.gs_decoder, args.text_model, args.dtype, args.device, allow_paths=local)
    if store.default:
        try:
            store.autoencoder(store.default)
        except DemoInputError as err:
            raise SystemExit(str(err)) from None
    else:
        info(args, "no AToken model given and none embedded: the page explains how to add one (--model DIR).")
    limits = Limits(upload_mb=args.max_upload_mb, image_side=args.max_image_side, video_frames=args.max_frames,
                    video_seconds=args.max_video_seconds, video_side=args.max_video_side)
    return serve(store, limits, host=args.host, port=args.port, share=args.share, block=block)
