"""``atoken generate image --pipeline DIR --class-id 3 --seed 0 --out x.png``: sample from a trained generator
pipeline (DiT or AR, told apart by its model_index.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import DTYPES, pick_device


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate images with a trained AToken DiT or AR pipeline")
    what = p.add_subparsers(dest="what", required=True)
    img = what.add_parser("image", help="class-conditional (or text-conditional) images")
    img.add_argument("--pipeline", required=True, help="pipeline folder (e.g. RUN/pipeline of train-generator)")
    img.add_argument("--class-id", type=int, nargs="+", help="class id(s); one image each (times --num-images)")
    img.add_argument("--class-name", nargs="+", help="class name(s) instead of ids (the training sub-folder names)")
    img.add_argument("--prompt", help="DiT with text conditioning: a caption, embedded with --text-model")
    img.add_argument("--text-model", help="local SigLIP2 text folder for --prompt")
    img.add_argument("--num-images", type=int, default=1, help="images per class")
    img.add_argument("--seed", type=int, default=0)
    img.add_argument("--steps", type=int, default=50, help="DiT: Euler steps")
    img.add_argument("--guidance", type=float, help="classifier-free guidance scale >= 1 (default DiT 4, AR 3)")
    img.add_argument("--height", type=int, help="pixels, multiple of 16 (default: the training size)")
    img.add_argument("--width", type=int)
    img.add_argument("--temperature", type=float, default=1.0, help="AR: sampling temperature (0: greedy)")
    img.add_argument("--top-k", type=int, help="AR: top-k filtering")
    img.add_argument("--top-p", type=float, help="AR: nucleus filtering")
    img.add_argument("--out", required=True, help="image file; several images get -0, -1, ... before the suffix")
    img.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    img.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    img.set_defaults(func=run)


def load_pipeline(folder: str, dtype: str = "fp32", device: str | None = None):
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise SystemExit(f"--pipeline {folder}: no model_index.json; pass the pipeline/ folder of train-generator.")
    name = json.loads(index.read_text()).get("_class_name")
    if name == "ATokenDiTPipeline":
        from ..generation.pipeline_dit import ATokenDiTPipeline as cls
    elif name == "ATokenARPipeline":
        from ..generation.pipeline_ar import ATokenARPipeline as cls
    else:
        raise SystemExit(f"--pipeline {folder} holds a {name}; atoken generate runs ATokenDiTPipeline or "
                         "ATokenARPipeline.")
    kwargs = {} if dtype == "fp32" else {"torch_dtype": DTYPES[dtype]}
    return cls.from_pretrained(folder, **kwargs).to(pick_device(device))


def output_paths(out: str, count: int) -> list[Path]:
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def run(args: argparse.Namespace) -> None:
    import torch

    from ..utils.media import save_image

    if args.class_id and args.class_name:
        raise SystemExit("pass --class-id or --class-name, not both.")
    pipe = load_pipeline(args.pipeline, args.dtype, args.device)
    is_dit = type(pipe).__name__ == "ATokenDiTPipeline"
    labels = args.class_id or args.class_name
    cfg = pipe.transformer.config
    if labels is None and not args.prompt and cfg.num_classes > 1:
        names = ", ".join(f"{i}={n}" for i, n in enumerate(pipe.class_names[:20])) or f"ids 0..{cfg.num_classes - 1}"
        raise SystemExit(f"pass --class-id N or --class-name NAME ({names}).")
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    common = dict(class_labels=labels, num_images_per_prompt=args.num_images, height=args.height, width=args.width,
                  generator=generator, output_type="pt")
    try:
        if is_dit:
            prompt_embeds = None
            if args.prompt:
                if not args.text_model:
                    raise SystemExit("--prompt needs --text-model (a local SigLIP2 text folder).")
                from ..understanding.text import TextTower

                prompt_embeds = TextTower.from_pretrained(args.text_model).encode([args.prompt])
                if labels is not None:
                    prompt_embeds = prompt_embeds.expand(len(labels), -1)
            images = pipe(prompt_embeds=prompt_embeds, num_inference_steps=args.steps,
                          guidance_scale=4.0 if args.guidance is None else args.guidance, **common).images
        else:
            if args.prompt:
                raise SystemExit("--prompt: the AR pipeline is class-conditional only.")
            images = pipe(guidance_scale=3.0 if args.guidance is None else args.guidance,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, **common).images
    except (ValueError, TypeError) as err:
        raise SystemExit(f"atoken generate: {err}") from None
    paths = output_paths(args.out, images.shape[0])
    for image, path in zip(images, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image * 2 - 1, path)
    print(f"wrote {', '.join(map(str, paths))} ({type(pipe).__name__}, seed {args.seed})")
