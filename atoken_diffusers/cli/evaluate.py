"""``atoken evaluate DATA --model DIR [--peer DIR ...]``: the paper's reconstruction metrics over a folder, every model
beside diffusers peers and a PCA baseline of each model's latent size, as one Markdown + JSON table.

Works as is or under ``accelerate launch`` (items sharded across processes); results are kept per item in a work
folder, so an interrupted or extended run computes only what is missing."""

from __future__ import annotations

import argparse
import os

from .checks import POSITIVE_INT, SIDE
from .common import DTYPE_CHOICES, info, pick_device, progress_enabled, torch_dtype
from .errors import UsageError

FEATURE_FILES = """feature networks (local files, nothing downloads; without them LPIPS / rFID / rFVD say "not computed"):
  --inception  pt_inception-2015-12-05-6726825d.pth (the FID Inception-v3 of pytorch-fid / torch-fidelity)
  --i3d        rgb_imagenet.pt (the PyTorch port of the Kinetics-400 I3D, pytorch-i3d layout)
  --lpips-vgg  torchvision vgg16 weights (features.N.weight keys)  --lpips-heads  LPIPS vgg.pth (linN.model.1.weight)
  .pth files are read with torch.load(weights_only=True); .safetensors with the same keys work too."""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="PSNR/SSIM/LPIPS/rFID/rFVD of AToken models beside diffusers peers and PCA",
                       description=__doc__, epilog=FEATURE_FILES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", help="folders, files, globs or bundled sets (skimage, gradio:images, "
                                           "gradio:videos, gradio:models3d, atoken:held-out = the 10 held-out "
                                           "photographs of the embedded model)")
    p.add_argument("--model", action="append", default=[], help="AToken folder (repeat for several; default: the "
                                                               "embedded atoken-small and atoken-small-d). FSQ "
                                                               "models are scored through their tokens")
    p.add_argument("--peer", action="append", default=[], help="diffusers autoencoder folder (AutoencoderKL, "
                                                              "AutoencoderKLWan, AutoencoderDC, ...; repeatable)")
    p.add_argument("--kind", action="append", choices=("images", "videos", "meshes"),
                   help="only these media kinds (repeatable; default: every kind DATA holds)")
    p.add_argument("--resolution", type=SIDE, default=256, help="square side every item is brought to (pixels)")
    p.add_argument("--fit", choices=("crop", "pad"), default="crop",
                   help="crop: shorter side to --resolution, centre crop; pad: longer side to --resolution, edges "
                        "repeated to a square, metrics on the picture only")
    p.add_argument("--frames", type=POSITIVE_INT, default=16, help="videos: the first this many frames")
    p.add_argument("--limit", type=POSITIVE_INT, help="at most this many items per kind (a quick look)")
    p.add_argument("--output", help="write the table here (.md) and the full report beside it (.json)")
    p.add_argument("--work-dir", help="per-item results, reused by reruns (default: OUTPUT.parts beside --output; "
                                      "without --output a temporary folder)")
    p.add_argument("--inception", help="FID Inception-v3 weights file (rFID)")
    p.add_argument("--i3d", help="I3D Kinetics-400 weights file (rFVD)")
    p.add_argument("--lpips-vgg", help="torchvision VGG16 weights file (LPIPS backbone)")
    p.add_argument("--lpips-heads", help="LPIPS vgg.pth head weights file")
    p.add_argument("--feature-networks", help="JSON naming any of them: {\"inception\": PATH, \"i3d\": PATH, "
                                              "\"lpips_vgg\": PATH, \"lpips_heads\": PATH}")
    p.add_argument("--gs-decoder", help="Gaussian decoder folder for meshes (default: the embedded one)")
    p.add_argument("--pca-fit", action="append", help="media a PCA baseline is fitted on when no shipped PCA has the "
                                                      "latent size (default: skimage + gradio:images for images, "
                                                      "gradio:videos for videos; held-out files excluded)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32", help="dtype of every model row")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available; each process's own "
                                    "under accelerate launch)")
    p.set_defaults(func=run)  # returns None: the console script exits with what the command returns


def _model_specs(args):
    from ..evaluation.autoencoders import model_spec
    from ..weights import default_model_dir

    models = args.model or [str(d) for d in (default_model_dir(), default_model_dir(discrete=True)) if d is not None]
    if not models and not args.peer:
        raise UsageError("--model is required: this installation ships no embedded model.")
    specs = []
    for path, peer in [(m, False) for m in models] + [(m, True) for m in args.peer]:
        try:
            specs.append(model_spec(path, peer=peer))
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise UsageError(f"--model/--peer: two folders share a name ({names}); rename one so the rows can be told apart.")
    return specs


def _work_dir(args) -> tuple[str, bool]:
    """The work folder and whether it is a temporary one (removed at the end)."""
    if args.work_dir:
        return args.work_dir, False
    if args.output:
        return f"{os.path.splitext(args.output)[0]}.parts", False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--work-dir (or --output) is needed under several processes: they share results there.")
    import tempfile

    return tempfile.mkdtemp(prefix="atoken-evaluate-"), True


def run(args: argparse.Namespace) -> None:
    """Print the table (main process), write --output and its JSON; results are in the JSON (``atoken`` exits with
    what ``run`` returns, so it returns nothing)."""
    evaluate_command(args)


def evaluate_command(args: argparse.Namespace) -> dict | None:
    """What ``atoken evaluate`` does; returns the report on the main process (None on the others)."""
    import json
    import shutil
    from pathlib import Path

    from ..evaluation.datasets import Protocol, discover
    from ..evaluation.feature_networks import FeatureNetworks
    from ..evaluation.runner import DEFAULT_PCA_FIT, Evaluation, evaluate
    from ..evaluation.table import markdown
    from ..utils.atomic import write_atomically
    from ..weights import default_gs_decoder_dir

    if args.output and Path(args.output).suffix.lower() != ".md":
        raise UsageError(f"--output {args.output}: the table is Markdown; name it .md (the JSON report goes beside).")
    try:
        items = discover(args.data, tuple(args.kind or ("images", "videos", "meshes")), args.limit)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    specs = _model_specs(args)
    try:
        networks = FeatureNetworks.from_files(args.inception, args.i3d, args.lpips_vgg, args.lpips_heads,
                                              args.feature_networks)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    gs = args.gs_decoder or (default_gs_decoder_dir() if any(i.kind == "meshes" for i in items) else None)
    pca_fit = {kind: tuple(args.pca_fit) for kind in DEFAULT_PCA_FIT} if args.pca_fit else dict(DEFAULT_PCA_FIT)
    work_dir, temporary = _work_dir(args)
    evaluation = Evaluation(items, specs, Path(work_dir), Protocol(args.resolution, args.fit, args.frames), networks,
                            torch_dtype(args.dtype), pick_device(args.device), str(gs) if gs else None, pca_fit)
    try:
        report = evaluate(evaluation, progress=progress_enabled(args))
    finally:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    if report is None:  # another process than the main one
        return None
    table = markdown(report)
    print(table, end="")
    if args.output:
        write_atomically(Path(args.output).with_suffix(".json"), json.dumps(report, indent=1) + "\n")
        write_atomically(args.output, table)
        print(f"wrote {args.output} and {Path(args.output).with_suffix('.json')}")
    reused = sum(r["items"] for r in report["rows"]) - report["computed"]
    if reused > 0 and not temporary:
        info(args, f"reused {reused} results from {work_dir}")
    return report
