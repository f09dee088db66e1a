"""``atoken generate image|video|3d``: sample from a trained generator pipeline (told apart by its model_index.json).

    atoken generate image --pipeline DIR --class-id 3 --seed 0 --out x.png        # DiT or AR
    atoken generate video --pipeline DIR --prompt "a red car" --num-frames 17 --out x.mp4   # Wan on AToken latents
    atoken generate 3d photo.png --pipeline DIR --out object.ply                 # image-to-3D Gaussian splat
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .checks import (
    ANY_FLOAT,
    GUIDANCE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SIDE,
    check_output,
    float_range,
    int_at_least,
)
from .common import DTYPE_CHOICES, pick_device, progress_enabled, torch_dtype
from .errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate images (DiT/AR), videos (Wan) or 3D splats with a trained pipeline")
    what = p.add_subparsers(dest="what", required=True)
    img = what.add_parser("image", help="class-conditional (or text-conditional) images")
    img.add_argument("--pipeline", required=True, help="pipeline folder (e.g. RUN/pipeline of train-generator)")
    img.add_argument("--class-id", type=int_at_least(0), nargs="+", help="class id(s); one image each (times --num-images)")
    img.add_argument("--class-name", nargs="+", help="class name(s) instead of ids (the training sub-folder names)")
    img.add_argument("--prompt", help="DiT with text conditioning: a caption, embedded with --text-model")
    img.add_argument("--text-model", help="local SigLIP2 text folder for --prompt")
    img.add_argument("--num-images", type=POSITIVE_INT, default=1, help="images per class")
    img.add_argument("--seed", type=SEED, default=0)
    img.add_argument("--steps", type=POSITIVE_INT, default=50, help="DiT: Euler steps")
    img.add_argument("--guidance", type=GUIDANCE, help="classifier-free guidance scale >= 1 (default DiT 4, AR 3)")
    img.add_argument("--height", type=SIDE, help="pixels, multiple of 16 (default: the training size)")
    img.add_argument("--width", type=SIDE)
    img.add_argument("--temperature", type=float_range(0), default=1.0, help="AR: sampling temperature (0: greedy)")
    img.add_argument("--top-k", type=POSITIVE_INT, help="AR: top-k filtering")
    img.add_argument("--top-p", type=float_range(0, 1, low_open=True), help="AR: nucleus filtering")
    img.add_argument("--out", required=True, help="image file (.png, .jpg, .webp, ...); several images get -0, -1, ... before the suffix")
    img.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    img.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    img.set_defaults(func=run)

    vid = what.add_parser("video", help="text-to-video (or image-to-video) with a Wan pipeline on AToken latents")
    vid.add_argument("--pipeline", required=True, help="pipeline folder (RUN/pipeline of train_wan)")
    vid.add_argument("--prompt", required=True, help="what the video shows")
    vid.add_argument("--negative-prompt", help="what to steer away from (classifier-free guidance)")
    vid.add_argument("--image", help="first frame, for an image-to-video pipeline")
    vid.add_argument("--num-frames", type=POSITIVE_INT, help="4k + 1 (default: the training length); AToken decodes 4 (k + 1)")
    vid.add_argument("--height", type=SIDE, help="pixels (default: the training size)")
    vid.add_argument("--width", type=SIDE)
    vid.add_argument("--steps", type=POSITIVE_INT, default=50, help="denoising steps")
    vid.add_argument("--guidance", type=GUIDANCE, default=5.0, help="classifier-free guidance scale (1: off)")
    vid.add_argument("--seed", type=SEED, default=0)
    vid.add_argument("--fps", type=POSITIVE_FLOAT, default=16.0)
    vid.add_argument("--out", required=True, help="video file (.mp4, .m4v, .mov, .mkv)")
    vid.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    vid.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    vid.set_defaults(func=run_video)

    obj = what.add_parser("3d", help="image-to-3D: a Gaussian splat (.ply) of the object in an image")
    obj.add_argument("image", help="image file of the object")
    obj.add_argument("--pipeline", required=True, help="ATokenImageTo3DPipeline folder (RUN/pipeline)")
    obj.add_argument("--out", required=True, help="Gaussian splat file: .ply (3D Gaussian Splatting) or .splat")
    obj.add_argument("--steps", type=POSITIVE_INT, default=25, help="denoising steps of each stage")
    obj.add_argument("--guidance", type=GUIDANCE, default=3.0, help="classifier-free guidance scale (1: off)")
    obj.add_argument("--threshold", type=ANY_FLOAT, default=0.0, help="occupancy logit threshold of stage 1")
    obj.add_argument("--seed", type=SEED, default=0)
    obj.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    obj.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    obj.set_defaults(func=run_3d)


PIPELINES = {  # model_index.json class name -> (module, class) that loads it
    "ATokenDiTPipeline": ("atoken_diffusers.generation.image.pipeline_dit", "ATokenDiTPipeline"),
    "ATokenARPipeline": ("atoken_diffusers.generation.image.pipeline_ar", "ATokenARPipeline"),
    "ATokenWanPipeline": ("atoken_diffusers.generation.video.pipeline_wan", "ATokenWanPipeline"),
    "ATokenWanImageToVideoPipeline": ("atoken_diffusers.generation.video.pipeline_wan", "ATokenWanImageToVideoPipeline"),
    "WanPipeline": ("diffusers", "WanPipeline"),
    "ATokenImageTo3DPipeline": ("atoken_diffusers.generation.three_d.pipeline_image_to_3d", "ATokenImageTo3DPipeline"),
}


def load_pipeline(folder: str, dtype: str = "fp32", device: str | None = None,
                  allowed: tuple[str, ...] = ("ATokenDiTPipeline", "ATokenARPipeline"), what: str = "image",
                  progress: bool | None = False):
    """The pipeline class named in ``folder``'s model_index.json (one of ``allowed``), loaded on ``device``; its
    denoising bar follows ``progress`` (None: when stderr is a terminal, False: never)."""
    import importlib

    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise UsageError(f"--pipeline {folder}: no model_index.json; pass the pipeline/ folder of a training run.")
    name = json.loads(index.read_text()).get("_class_name")
    if name not in allowed:
        raise UsageError(f"--pipeline {folder} holds a {name}; atoken generate {what} runs {' or '.join(allowed)}.")
    module, cls_name = PIPELINES[name]
    cls = getattr(importlib.import_module(module), cls_name)
    kwargs = {} if dtype == "fp32" else {"torch_dtype": torch_dtype(dtype)}
    pipe = cls.from_pretrained(folder, **kwargs).to(pick_device(device))
    pipe.set_progress_bar_config(disable=None if progress is None else not progress)
    return pipe


def output_paths(out: str, count: int) -> list[Path]:
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def run(args: argparse.Namespace) -> None:
    import torch

    from ..utils.media import save_image

    if args.class_id and args.class_name:
        raise UsageError("pass --class-id or --class-name, not both.")
    check_output(args.out, "image", flag="--out")
    pipe = load_pipeline(args.pipeline, args.dtype, args.device, progress=progress_enabled(args))
    is_dit = type(pipe).__name__ == "ATokenDiTPipeline"
    labels = args.class_id or args.class_name
    cfg = pipe.transformer.config
    if labels is None and not args.prompt and cfg.num_classes > 1:
        names = ", ".join(f"{i}={n}" for i, n in enumerate(pipe.class_names[:20])) or f"ids 0..{cfg.num_classes - 1}"
        raise UsageError(f"pass --class-id N or --class-name NAME ({names}).")
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    common = dict(class_labels=labels, num_images_per_prompt=args.num_images, height=args.height, width=args.width,
                  generator=generator, output_type="pt")
    try:
        if is_dit:
            prompt_embeds = None
            if args.prompt:
                if not args.text_model:
                    raise UsageError("--prompt needs --text-model (a local SigLIP2 text folder).")
                from ..understanding.text import TextTower

                prompt_embeds = TextTower.from_pretrained(args.text_model).encode([args.prompt])
                if labels is not None:
                    prompt_embeds = prompt_embeds.expand(len(labels), -1)
            images = pipe(prompt_embeds=prompt_embeds, num_inference_steps=args.steps,
                          guidance_scale=4.0 if args.guidance is None else args.guidance, **common).images
        else:
            if args.prompt:
                raise UsageError("--prompt: the AR pipeline is class-conditional only.")
            images = pipe(guidance_scale=3.0 if args.guidance is None else args.guidance,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, **common).images
    except (ValueError, TypeError) as err:
        raise SystemExit(f"atoken generate: {err}") from None
    paths = output_paths(args.out, images.shape[0])
    for image, path in zip(images, paths):
        save_image(image * 2 - 1, path)
    print(f"wrote {', '.join(map(str, paths))} ({type(pipe).__name__}, seed {args.seed})")


def run_video(args: argparse.Namespace) -> None:
    import torch

    from ..generation.video.wan import check_num_frames
    from ..utils.media import save_video

    check_output(args.out, "video", inputs=[args.image], flag="--out")
    pipe = load_pipeline(args.pipeline, args.dtype, args.device, what="video",
                         allowed=("ATokenWanPipeline", "ATokenWanImageToVideoPipeline", "WanPipeline"),
                         progress=progress_enabled(args))
    kwargs = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                  guidance_scale=args.guidance, generator=torch.Generator(device="cpu").manual_seed(args.seed),
                  output_type="pt")
    for key in ("num_frames", "height", "width"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    is_i2v = type(pipe).__name__ == "ATokenWanImageToVideoPipeline"
    try:
        if "num_frames" in kwargs:
            check_num_frames(kwargs["num_frames"], "--num-frames")
        if is_i2v != bool(args.image):
            raise ValueError("--image is needed by image-to-video pipelines and refused by text-to-video ones.")
        if is_i2v:
            kwargs["image"] = args.image
        frames = pipe(**kwargs).frames  # (1, F, 3, H, W) in [0, 1]
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"atoken generate video: {err}") from None
    out = Path(args.out)
    save_video(frames[0].float().permute(1, 0, 2, 3) * 2 - 1, out, fps=args.fps)
    print(f"wrote {out} ({frames.shape[1]} frames of {frames.shape[-1]} x {frames.shape[-2]}, seed {args.seed})")


def run_3d(args: argparse.Namespace) -> None:
    import torch

    out = check_output(args.out, "Gaussian splat", inputs=[args.image], flag="--out")
    pipe = load_pipeline(args.pipeline, args.dtype, args.device, allowed=("ATokenImageTo3DPipeline",), what="3d",
                         progress=progress_enabled(args))
    try:
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        result = pipe(args.image, num_inference_steps=args.steps, guidance_scale=args.guidance,
                      occupancy_threshold=args.threshold, generator=generator)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"atoken generate 3d: {err}") from None
    gaussians = result.gaussians[0]
    (gaussians.save_ply if out.suffix.lower() == ".ply" else gaussians.save_splat)(out)
    print(f"wrote {out} ({len(gaussians)} Gaussians on {result.coords[0].shape[0]} voxels, seed {args.seed})")
