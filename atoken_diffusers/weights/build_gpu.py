"""Stage 1 of the embedded default on a GPU machine that has PyTorch but no network (how the shipped stage 1 was
trained), in three steps; the rest of the build then runs as usual:

    python -m atoken_diffusers.weights.build_gpu pack .gpu        # here: what the GPU machine needs, ~15 MB
    python -m atoken_diffusers.weights.build_gpu run .gpu --out OUT --budget 215   # there, the package importable
    python -m atoken_diffusers.weights.build_gpu join OUT         # here: -> runs/embedded/stage1/
    python -m atoken_diffusers.weights.build                      # refit, FSQ stage, export, evaluation

``pack`` writes the training photographs as thumbnails of at most 512 px (the size the trainer caches them at), the
PCA-48 and context-decoder fits (run ``build`` once first, or it fits them) and the held-out photographs as tensors.
``run`` trains the ``VARIANTS`` of ``embedded_stage1`` side by side on one GPU, each for ``--budget`` seconds: after 60
steps it measures its speed and sets ``max_steps`` so that the cosine schedule ends on time. It then scores each on
the held-out photographs and writes the best one's weights in three parts (files of at most 16 MB) with a summary.
The device machine here had diffusers missing: carry its wheel (``pip download --no-deps diffusers``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {
    "a": {"optim.lr": 1e-4, "tasks.image.batch_size": 16},
    "b": {"optim.lr": 3e-4, "tasks.image.batch_size": 16},
    "c": {"optim.lr": 1e-4, "tasks.image.batch_size": 16, "losses.gradient": 10.0},
}
CALIBRATION = (20, 60)  # steps between which the speed is measured
PARTS = 3


def log(*args) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def pack(folder: Path, run_dir: Path) -> None:
    """Everything ``run`` reads, into ``folder``."""
    from PIL import Image
    from safetensors.torch import save_file

    from .build import ensure_photographs, fit_baselines
    from .curriculum import training_photos
    from .evaluate import held_out_image
    from .held_out import HELD_OUT_IMAGES

    ensure_photographs()
    fit_baselines(run_dir)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(training_photos()):
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((512, 512), Image.Resampling.LANCZOS)
            im.save(folder / "photos" / f"{i:04d}_{f.stem[:40]}.jpg", quality=95)
    save_file({name: held_out_image(b, name)[0].contiguous() for b, name in HELD_OUT_IMAGES},
              folder / "held_out.safetensors")
    for name in ("pca-48.safetensors", "context-decoder.safetensors"):
        shutil.copy(run_dir / name, folder / name)


def train_variant(folder: Path, runs: Path, name: str, budget: float, calibration=CALIBRATION) -> None:
    """One variant of stage 1, ending after about ``budget`` seconds (its own process)."""
    from ..training.checkpoint import finish_step, start_run
    from ..training.config import TrainConfig
    from ..training.optimization import lr_factor
    from ..training.run_log import progress_bar
    from ..training.trainer import Trainer

    start = time.time()
    overrides = {"tasks.image.source.paths": [str(folder / "photos")],
                 "model.pca_init": str(folder / "pca-48.safetensors"),
                 "model.context_init": str(folder / "context-decoder.safetensors"),
                 "run.output_dir": str(runs / name), "run.checkpoint_every": 10**8, "run.log_every": 50,
                 "run.max_steps": 10**8, **VARIANTS[name]}
    cfg = TrainConfig.from_yaml("embedded_stage1", overrides)
    trainer = Trainer(cfg)
    run, acc = cfg.run, trainer.accelerator
    start_run(acc, trainer.out_dir, cfg.to_dict(), trainer.ema, trainer.scheduler, trainer.progress)
    trainer.step_module.train()
    bar = progress_bar(acc, run.max_steps, 0)
    total, clock = None, None
    while total is None or trainer.progress.step < total:
        step = trainer.progress.step
        micro = [trainer._micro_step(step * run.grad_accum + j) for j in range(run.grad_accum)]
        finish_step(acc, trainer.out_dir, run, trainer.scheduler, trainer.ema, trainer.trainable, trainer.progress,
                    bar, lambda done, m=micro: trainer._log(done, m))
        if trainer.progress.step == calibration[0]:
            clock = time.time()
        elif trainer.progress.step == calibration[1]:
            rate = (calibration[1] - calibration[0]) / (time.time() - clock)
            total = max(calibration[1], int(calibration[1] + rate * (budget - (time.time() - start))))
            run.max_steps = total  # the cosine schedule (one lambda per parameter group) now ends at the budget
            trainer.scheduler.lr_lambdas = [lambda s, t=total: lr_factor(s, cfg.optim, t)] * len(
                trainer.scheduler.lr_lambdas)
            log(f"{name}: {rate:.2f} steps/s -> {total} steps")
    bar.close()
    trainer.export()
    (runs / name / "config.json").write_text(json.dumps({**cfg.to_dict(), "run": {**cfg.to_dict()["run"],
                                                                                  "max_steps": total}}, indent=1))
    (runs / name / "seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    log(f"{name}: {total} steps in {time.time() - start:.0f} s")


@torch.no_grad()
def score(folder: Path, model_dir: Path, device: str) -> dict:
    """Mean PSNR / SSIM / grid of a variant on the packed held-out photographs."""
    from safetensors.torch import load_file

    from ..models.autoencoder_atoken import AutoencoderAToken
    from .evaluate import _mean, _scores

    model = AutoencoderAToken.from_pretrained(model_dir, torch_dtype=torch.float32).to(device).eval()
    per_image = {name: _scores(model(x[None].to(device)).sample.clamp(-1, 1).cpu(), x[None])
                 for name, x in load_file(folder / "held_out.safetensors").items()}
    return {k: _mean(per_image, k) for k in ("psnr", "ssim", "grid")}


def run(folder: Path, out: Path, budget: float, runs: Path, calibration=CALIBRATION) -> dict:
    """Train every variant side by side, score them, write the best to ``out``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log("device", device, torch.cuda.get_device_name() if device == "cuda" else "")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "logs.txt", "w") as logs:
        env = {**os.environ, "OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}
        procs = {name: subprocess.Popen([sys.executable, "-m", __spec__.name, "variant", str(folder), name,
                                         "--budget", str(budget), "--runs", str(runs), "--calibration",
                                         *map(str, calibration)], env=env, stdout=logs,
                                        stderr=subprocess.STDOUT) for name in VARIANTS}
        codes = {name: p.wait() for name, p in procs.items()}
    scores = {name: score(folder, runs / name / "final", device) for name in VARIANTS if codes[name] == 0}
    if not scores:
        raise SystemExit(f"every variant failed ({codes}); see {out / 'logs.txt'}")
    best = max(scores, key=lambda n: scores[n]["psnr"])
    from safetensors.torch import load_file, save_file

    state = load_file(runs / best / "final" / "diffusion_pytorch_model.safetensors")
    keys = sorted(state)
    for i in range(PARTS):
        save_file({k: state[k].contiguous() for k in keys[i::PARTS]}, out / f"part{i}.safetensors")
    summary = {"best": best, "variants": VARIANTS, "scores": scores, "exit_codes": codes,
               "config": json.loads((runs / best / "config.json").read_text()),
               "model_config": json.loads((runs / best / "final" / "config.json").read_text()),
               "seconds": float((runs / best / "seconds.txt").read_text())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log("scores", json.dumps(scores), "best", best)
    return summary


def join(out: Path, run_dir: Path) -> Path:
    """``run``'s files -> ``run_dir/stage1/final`` (a diffusers folder) with the stage's config and seconds."""
    from safetensors.torch import load_file, save_file

    from ..utils.atomic import atomic_folder

    summary = json.loads((out / "summary.json").read_text())
    state = {}
    for i in range(PARTS):
        state.update(load_file(out / f"part{i}.safetensors"))
    stage = run_dir / "stage1"
    stage.mkdir(parents=True, exist_ok=True)
    with atomic_folder(stage / "final", overwrite=True) as tmp:
        save_file(state, tmp / "diffusion_pytorch_model.safetensors")
        (tmp / "config.json").write_text(json.dumps(summary["model_config"], indent=1))
    (stage / "config.json").write_text(json.dumps(summary["config"], indent=1))
    (stage / "seconds.txt").write_text(f"{summary['seconds']:.0f}\n")
    return stage / "final"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("folder", type=Path)
    a.add_argument("--run-dir", type=Path, default=Path("runs/embedded"))
    a = sub.add_parser("run")
    a.add_argument("folder", type=Path)
    a.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    a.add_argument("--budget", type=float, default=215.0, help="seconds of training per variant")
    a.add_argument("--runs", type=Path, default=Path("/tmp/atoken-stage1"))
    a.add_argument("--calibration", type=int, nargs=2, default=CALIBRATION, help="steps to time the speed between")
    a = sub.add_parser("variant")  # one variant's process (started by run)
    a.add_argument("folder", type=Path)
    a.add_argument("name", choices=sorted(VARIANTS))
    a.add_argument("--budget", type=float, required=True)
    a.add_argument("--runs", type=Path, required=True)
    a.add_argument("--calibration", type=int, nargs=2, default=CALIBRATION)
    a = sub.add_parser("join")
    a.add_argument("out", type=Path)
    a.add_argument("--run-dir", type=Path, default=Path("runs/embedded"))
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.folder, args.run_dir)
    elif args.command == "run":
        run(args.folder, args.out, args.budget, args.runs, tuple(args.calibration))
    elif args.command == "variant":
        train_variant(args.folder, args.runs, args.name, args.budget, tuple(args.calibration))
    else:
        print(join(args.out, args.run_dir))


if __name__ == "__main__":
    main()
