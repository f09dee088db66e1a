"""``atoken export``: the encoder and/or decoder as a torch.export program (.pt2) or an ONNX file, with dynamic
height/width (and frames for videos)."""

from __future__ import annotations

from pathlib import Path

from .checks import SIDE, check_output
from .common import DTYPE_CHOICES
from .errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export the encoder/decoder as a torch.export program (.pt2) or ONNX",
                       description="Write deployment graphs of an AToken model: the encoder (pixels in [-1, 1] -> "
                                   "posterior mean) and the decoder (latents -> pixels), with height and width "
                                   "dynamic (multiples of 16 px) and, with --video, frames (multiples of 4, up to one "
                                   "16-frame tile).")
    p.add_argument("--model", help="converted folder (default: the embedded model)")
    p.add_argument("--config", help="YAML config when --model is an official .pt checkpoint")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    p.add_argument("--part", choices=["encoder", "decoder", "both"], default="both")
    p.add_argument("--video", action="store_true", help="video graphs (5-D inputs) instead of image graphs")
    p.add_argument("--static", action="store_true", help="fix the shapes to the example input's")
    p.add_argument("--size", type=SIDE, default=64, help="side of the example input in pixels (a multiple of 16)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--output", required=True, help="output folder: encoder.onnx / decoder.onnx (or .pt2) inside")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..models.export import example_input, export_onnx, export_program, save_program
    from .common import load_model

    check_output(args.output, None, inputs=[args.model, args.config], folder=True)
    model = load_model(args.model or _embedded(), args.config, args.dtype, "cpu")
    out = Path(args.output)
    parts = ("encoder", "decoder") if args.part == "both" else (args.part,)
    for part in parts:
        try:
            example = example_input(model, part, video=args.video, size=args.size)
        except ValueError as err:
            raise UsageError(f"--size: {err}") from None
        path = out / f"{part}.{args.format}"
        if args.format == "onnx":
            export_onnx(model, part, path, video=args.video, dynamic=not args.static, example=example)
        else:
            save_program(export_program(model, part, video=args.video, dynamic=not args.static, example=example), path)
        print(f"wrote {path}")


def _embedded() -> str:
    from ..weights import default_model_dir

    folder = default_model_dir()
    if folder is None:
        raise UsageError("this installation carries no embedded model; pass --model DIR.")
    return str(folder)
