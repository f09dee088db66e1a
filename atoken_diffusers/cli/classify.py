"""`atoken classify`: zero-shot labels for an image or a video with AToken + a SigLIP2 text tower."""

from __future__ import annotations

import argparse

from .checks import POSITIVE_INT
from .common import DTYPE_CHOICES, load_model
from .errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="zero-shot classification of an image or video")
    p.add_argument("input", help="image or video file")
    p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,rocket"')
    p.add_argument("--model", required=True, help="converted AToken folder (or official .pt with --config)")
    p.add_argument("--config", help="official YAML when --model is a .pt file")
    p.add_argument("--text-model", required=True, help="local folder with a SigLIP2/SigLIP text model and tokenizer")
    p.add_argument("--templates", default=None, help='";"-separated prompt templates with {} (default: built-in set)')
    p.add_argument("--top-k", type=POSITIVE_INT, default=5, help="print the K most likely labels")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    p.add_argument("--device")
    p.add_argument("--max-frames", type=POSITIVE_INT, default=16, help="videos: read at most this many frames")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..understanding import TEMPLATES, TextTower, ZeroShotClassifier
    from ..utils.media import is_video, load_image, load_video

    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if not labels:
        raise UsageError('--labels is empty; pass comma-separated class names, e.g. --labels "cat,dog".')
    model = load_model(args.model, args.config, args.dtype, args.device)
    tower = TextTower.from_pretrained(args.text_model, device=model.device)
    templates = tuple(t for t in args.templates.split(";")) if args.templates else TEMPLATES
    if any("{}" not in t for t in templates):
        raise UsageError(f'--templates "{args.templates}": every template needs a {{}} for the label, e.g. '
                         f'"a photo of a {{}};a video of a {{}}".')
    clf = ZeroShotClassifier(model, tower, labels, templates)
    x = load_video(args.input, args.max_frames)[0] if is_video(args.input) else load_image(args.input)
    with torch.inference_mode():
        top = clf.classify(x.to(model.device, model.dtype), top_k=args.top_k)[0]
    for label, prob in top:
        print(f"{prob:8.4f}  {label}")
