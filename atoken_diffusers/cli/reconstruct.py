"""`atoken reconstruct`: encode and decode an image or a video file, save the result, print PSNR/SSIM."""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

from .checks import POSITIVE_INT, check_output
from .common import DTYPE_CHOICES, load_model, progress_enabled, torch_dtype
from .errors import UsageError

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")


def _reconstruct_mesh(args: argparse.Namespace, model) -> None:
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder
    from ..three_d.pipeline import reconstruct_mesh
    from ..weights import default_gs_decoder_dir

    args.gs_decoder = args.gs_decoder or default_gs_decoder_dir()
    if not args.gs_decoder:
        raise UsageError("--gs-decoder DIR is needed to turn a mesh into Gaussians (convert 3d_decode_gs.pt first).")
    gs = ATokenGaussianDecoder.from_pretrained(args.gs_decoder, torch_dtype=torch_dtype(args.dtype)).to(model.device).eval()
    start = time.perf_counter()
    result = reconstruct_mesh(args.input, model, gs, num_views=args.views, eval_views=args.eval_views,
                              progress=progress_enabled(args))
    save = result.gaussians.save_ply if args.output.lower().endswith(".ply") else result.gaussians.save_splat
    save(args.output)
    print(f"{args.input} ({result.coords.shape[0]} voxels) -> {args.output} ({result.gaussians.xyz.shape[0]} Gaussians): "
          f"3D PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} at {args.eval_views} held-out views, {time.perf_counter() - start:.1f} s")


def add_parser(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct an image, video or mesh through AToken and report PSNR/SSIM")
    p.add_argument("input", help="image (png, jpg, ...), video (mp4, mov, webm, ...) or mesh (glb, gltf, obj, ply, stl); "
                                 "bundled media as SET/NAME, e.g. skimage/chelsea.png, gradio:videos/a.mp4")
    p.add_argument("--model", help="converted folder, or an official .pt together with --config (default: the "
                                   "embedded atoken-small, or atoken-small-d with --discrete)")
    p.add_argument("--config", help="official YAML when --model is a .pt file")
    p.add_argument("--output", required=True, help="reconstruction file: same kind as the input, format by extension "
                                                   "(.png, .jpg, .webp, ... / .mp4, .mov, .mkv / .ply, .splat)")
    p.add_argument("--overwrite", action="store_true", help="allow --output to be the input file (replaced in place)")
    p.add_argument("--gs-decoder", help="converted Gaussian decoder folder (meshes; default: the embedded one)")
    p.add_argument("--views", type=POSITIVE_INT, default=24, help="meshes: packing views on a sphere")
    p.add_argument("--eval-views", type=POSITIVE_INT, default=8, help="meshes: held-out views scored for the 3D PSNR")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--max-frames", type=POSITIVE_INT, default=64, help="read at most this many video frames")
    p.add_argument("--tiling", action="store_true", help="spatial tiles for large inputs (saves memory)")
    p.add_argument("--discrete", action="store_true", help="reconstruct through FSQ tokens (So/D models)")
    p.set_defaults(func=run)


@contextmanager
def _tile_progress(model, frames: int | None, enabled: bool | None):
    """A bar advanced by every encoder and decoder call, i.e. by every temporal (and spatial) tile the model runs;
    its total is known unless spatial tiling decides the tile count from the size. Yields the bar; ``frames`` None
    (an image: one tile each way) yields None and shows none."""
    if frames is None:
        yield None
        return
    from ..utils.progress import progress_bar

    opts = model.inference_options()
    total = None
    if not opts.tiling:
        encoder_tiles = -(-frames // model.config.temporal_tile_frames)
        padded = -(-frames // 4) * 4
        decoder_tiles = 1 if opts.decode_cache_frames else -(-padded // opts.decode_stride_frames)
        total = encoder_tiles + decoder_tiles
    with progress_bar(total=total, desc=f"reconstruct {frames} frames", unit="tile", enabled=enabled) as bar:

        def count_tile(*_) -> None:  # returns None: a forward hook's non-None result would replace the output
            bar.update(1)

        hooks = [m.register_forward_hook(count_tile) for m in (model.encoder, model.decoder)]
        try:
            yield bar
        finally:
            for hook in hooks:
                hook.remove()


def run(args: argparse.Namespace) -> None:
    import torch

    from ..utils.media import is_video, load_image, load_video, save_image, save_video
    from ..utils.media_sets import resolve_media
    from ..utils.metrics import psnr, ssim
    from ..weights import default_model_dir

    try:
        args.input = str(resolve_media(args.input))
    except FileNotFoundError as err:
        raise UsageError(f"input: {err}") from None
    mesh, video = args.input.lower().endswith(MESH_SUFFIXES), is_video(args.input)
    kind = "Gaussian splat" if mesh else "video" if video else "image"
    check_output(args.output, kind, inputs=[args.input], overwrite=args.overwrite)
    if args.model is None:
        embedded = default_model_dir(discrete=args.discrete)
        if embedded is None:
            raise UsageError("--model is required: this installation ships no embedded model.")
        args.model = str(embedded)
    model = load_model(args.model, args.config, args.dtype, args.device)
    if args.discrete and model.quantizer is None:
        raise UsageError(f"--discrete: --model {args.model} has no FSQ quantizer; drop --discrete or pass an FSQ "
                         f"(So/D) model.")
    if mesh:
        return _reconstruct_mesh(args, model)
    if args.tiling:
        model.enable_tiling()
    if video:
        x, fps = load_video(args.input, max_frames=args.max_frames)
    else:
        x = load_image(args.input)
    x = x.to(model.device)
    start = time.perf_counter()
    with torch.inference_mode(), _tile_progress(model, x.shape[2] if video else None, progress_enabled(args)):
        if args.discrete:
            indices = model.tokenize(x)
            rec = model.decode(model.detokenize(indices)).sample
            rec = rec[..., : x.shape[-2], : x.shape[-1]]
            rec = rec[:, :, : x.shape[2]] if video else rec
        else:
            rec = model(x).sample
    seconds = time.perf_counter() - start
    rec = rec.float().clamp(-1, 1).cpu()
    x = x.float().cpu()
    if video:
        save_video(rec, args.output, fps=fps)
    else:
        save_image(rec, args.output)
    shape = "x".join(str(s) for s in x.shape[2:])
    print(f"{args.input} ({shape}) -> {args.output}: PSNR {psnr(rec, x):.2f} dB, SSIM {ssim(rec, x):.4f}, "
          f"{seconds:.2f} s on {model.device} ({args.dtype})")
