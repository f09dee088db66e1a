"""Rebuild the embedded default from scratch, resumably, with one command (run from the repository root):

    python -m atoken_diffusers.weights.build [--run-dir runs/embedded] [--launcher "accelerate launch ..."]

1. makes sure the training photographs are there (the Debian wallpaper packages; installed with apt when this runs
   as root, otherwise it says which command to run) and fits the PCA-48 baselines: image patches of the training
   photographs (the stage-1 encoder and the evaluation's baseline row) and 4 x 16 x 16 patches of the training
   clips; then the least-squares context decoder (``training/context_init.py``), the stage-1 decoder;
2. packs the training meshes (gradio's Bunny, face, Fox, sofia; pyvista's airplane, ant, nut) into voxel features;
3. trains the curriculum (``STAGES``: stage 1 images from the context codec, stage 4 FSQ; the video and 3D stages 2-3
   exist as configs for longer runs), each stage resuming from its checkpoints and skipped once its ``final/``
   exists; stage 4 starts from stage 1 with the latent re-coded for FSQ (``training/fsq_init.py``);
4. fits the Gaussian decoder on the packed meshes (resumable);
5. finishes both AToken models in closed form on training media (:func:`finish`: output projection refitted by least
   squares, deblocking strength chosen), exports the models into ``atoken_diffusers/weights/`` (float32; the Gaussian
   decoder bf16) and measures the held-out quality (``metrics.json``).

Stage 1 of the shipped model ran on a GPU machine (``weights/build_gpu.py``); without one, this trains it on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import save_atomically, write_atomically
from . import DEFAULT_DISCRETE_DIR, DEFAULT_GS_DECODER_DIR, DEFAULT_MODEL_DIR, WEIGHTS_DIR
from .curriculum import CONTINUOUS_STAGE, STAGES, training_photos

TRAIN_MESHES = [("gradio:models3d", n) for n in ("Bunny.obj", "face.obj", "Fox.gltf", "sofia.stl")] + \
               [("pyvista", n) for n in ("airplane.ply", "ant.ply", "nut.ply")]
# One surfel per voxel (three_d/surfels.py; its defaults), opaque, with the transformer learning corrections. Chosen on
# the 7 training meshes' held-out views (mean 3D PSNR before any fit, through atoken-small, plain-mean colours): this
# 24.59 dB; tangent 0.4 / 0.6 voxel 24.44 / 24.38; normal 0.1 24.48; smoothing 0.5 / 1.5 23.30 / 24.25; 4 Gaussians
# per voxel 24.09 (background-free colours, surfels.BACKGROUND, then 26.24).
# The learned decoder without the prior (8 Gaussians per voxel) scored 16.7 dB on the held-out Duck: 7 meshes are
# too few to learn where a surface lies from the features alone. Fitting the prior's corrections is worse still:
# 150 steps (lr 5e-4, 3 views of 96 px per step) took the training meshes' held-out views from 24.59 to 20.45 dB and
# the Duck from 23.6 to 18.7 (the splats grow to suit 96-px pixels), so the build ships the zero head (--gs-steps 0).
GS_CONFIG = dict(model_channels=96, num_blocks=2, num_heads=2, mlp_channels=384, num_gaussians=1,
                 perturb_offset=False, opacity_bias=0.99, surfel_prior={})


def ensure_photographs() -> None:
    """The Debian wallpaper photographs the image stages train on: installed with apt when possible."""
    from ..utils.media_sets import WALLPAPER_PACKAGES, debian_wallpapers

    if debian_wallpapers():
        return
    command = ["apt-get", "install", "-y", "-q", *WALLPAPER_PACKAGES]
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("$", shlex.join(command), flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(command, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(command, env=env, check=False)
    if not debian_wallpapers():
        raise SystemExit("the training photographs are missing: run `sudo apt-get install -y "
                         f"{' '.join(WALLPAPER_PACKAGES)}` (Debian/Ubuntu), then rerun the build.")


def fit_baselines(run_dir: Path) -> Path:
    """Fit PCA-48 on the stage-1 photographs and the stage-2 clips (once); copies go to ``weights/baseline/``."""
    from ..models.presets import preset_config
    from ..training.config import TrainConfig
    from ..utils.media_sets import expand_paths
    from .baseline import PCACodec, sample_image_patches, sample_video_patches, sample_views
    from .held_out import IMAGE_PCA, VIDEO_PCA

    image_pca = run_dir / "pca-48.safetensors"
    stage1 = TrainConfig.from_yaml("embedded_stage1")
    photos = training_photos()
    if not image_pca.is_file():
        PCACodec.fit(sample_image_patches(photos), 48).save(image_pca)
    context = run_dir / "context-decoder.safetensors"
    if not context.is_file():  # least squares from 3 x 3 coefficient neighbourhoods (other views than the PCA's)
        from safetensors.torch import save_file

        from ..training.context_init import fit_context_decoder

        preset = preset_config(stage1.model.preset, **stage1.model.overrides)
        head_dim = preset["decoder_dim"] // preset["decoder_heads"]
        fit = fit_context_decoder(PCACodec.load(image_pca), sample_views(photos, 3, seed=1), head_dim)
        write_atomically(context, lambda tmp: save_file(fit, tmp))
    video_pca = run_dir / "pca-48-video.safetensors"
    if not video_pca.is_file():
        src = TrainConfig.from_yaml("embedded_stage2").tasks["video"].source
        PCACodec.fit(sample_video_patches(expand_paths(src.paths, "videos", src.exclude)), 48, frames=4).save(video_pca)
    for src, dst in ((image_pca, IMAGE_PCA), (video_pca, VIDEO_PCA)):
        PCACodec.load(src).save(dst)
    return image_pca


def pack_meshes(out: Path) -> list[Path]:
    """Voxel-feature files of the training meshes in ``out`` (packed once, then reused)."""
    from ..three_d.pipeline import pack_mesh
    from ..three_d.voxelize import save_voxel_features
    from ..utils.media_sets import bundled_folder

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for bundle, name in TRAIN_MESHES:
        target = out / f"{Path(name).stem}.safetensors"
        if not target.is_file():
            save_voxel_features(target, *pack_mesh(bundled_folder(bundle) / name))
        files.append(target)
    return files


def _training_clips(count: int = 160, seed: int = 3):
    """``count`` random 8-frame training clips (stage 4's video source), (1, 3, 8, h, w) in [-1, 1]."""
    from ..training.config import TrainConfig
    from ..training.data import make_source

    source = make_source(TrainConfig.from_yaml("embedded_stage4").tasks["video"].source)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield source.sample(rng)[0][None]


def finish(model, name: str, views_per_file: int = 6) -> dict:
    """The closed-form last steps (``training/output_refit.py``), on training media only: the output projection's
    image rows refitted on photographs, its later-frame rows on clips, then the deblocking strength with the least
    pixel MSE on other views of the photographs. Printed and returned."""
    from ..training.output_refit import choose_deblock_strength, refit_output_projection
    from .baseline import sample_views

    photos = training_photos()
    summary = {"images": refit_output_projection(model, sample_views(photos, views_per_file, seed=5)),
               "clips": refit_output_projection(model, _training_clips(), frames=slice(1, 4))}
    best, table = choose_deblock_strength(model, sample_views(photos, 2, seed=7))
    model.register_to_config(deblock_strength=best)
    summary["deblock_strength"] = {"chosen": best, "training_mse": table}
    print(f"{name} model finished:", json.dumps(summary), flush=True)
    return summary


def continuous_model(run_dir: Path, views_per_file: int = 6) -> Path:
    """The shipped continuous model: the continuous stage's ``final/`` after :func:`finish`, written once to
    ``run_dir/stage1-refit``."""
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..utils.atomic import atomic_folder

    out = run_dir / f"stage{CONTINUOUS_STAGE}-refit"
    if (out / "config.json").is_file():
        return out
    model = AutoencoderAToken.from_pretrained(run_dir / f"stage{CONTINUOUS_STAGE}" / "final",
                                              torch_dtype=torch.float32).eval()
    summary = finish(model, "continuous", views_per_file)
    with atomic_folder(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "refit.json").write_text(json.dumps(summary) + "\n")
    return out


@torch.no_grad()
def prepare_fsq_init(run_dir: Path, samples: int = 48, seed: int = 0) -> Path:
    """The continuous model copied into an FSQ model with its latent re-coded for the FSQ levels, from the features of
    ``samples`` training batches (images and clips); written to ``run_dir/stage4-init`` with a summary."""
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..models.presets import preset_config
    from ..training.config import TrainConfig
    from ..training.data import make_batch, make_source
    from ..training.fsq_init import recode_for_fsq
    from ..utils.atomic import atomic_folder

    out = run_dir / "stage4-init"
    if (out / "config.json").is_file():
        return out
    cfg = TrainConfig.from_yaml("embedded_stage4")
    continuous = AutoencoderAToken.from_pretrained(continuous_model(run_dir), torch_dtype=torch.float32).eval()
    feats = []
    for name in ("image", "video"):
        source, rng = make_source(cfg.tasks[name].source), np.random.default_rng([seed, len(name)])
        for _ in range(samples // 2):
            batch = make_batch(source, cfg.tasks[name].batch_size, rng)
            feats.append(continuous.encode_tokens(batch.tokens).features)
    fsq = AutoencoderAToken(**preset_config(cfg.model.preset, **cfg.model.overrides)).eval()
    summary = recode_for_fsq(fsq, continuous, torch.cat(feats))
    with atomic_folder(out, overwrite=True) as tmp:  # the summary is part of the folder the check above looks for
        fsq.save_pretrained(tmp, safe_serialization=True)
        (tmp / "recode.json").write_text(json.dumps(summary) + "\n")
    print("FSQ re-coding:", json.dumps(summary), flush=True)
    return out


def train_stages(run_dir: Path, launcher: list[str]) -> None:
    """Run the curriculum ``STAGES`` in ``run_dir``, skipping those whose ``final/`` exists."""
    from ..training.config import TrainConfig

    for k in STAGES:
        if (run_dir / f"stage{k}" / "final" / "config.json").is_file():  # final/ appears only complete (renamed)
            continue
        cmd = [*launcher, "train", f"embedded_stage{k}", "--output-dir", str(run_dir / f"stage{k}")]
        if k == 1:
            cmd += ["--set", f"model.pca_init={run_dir / 'pca-48.safetensors'}",
                    "--set", f"model.context_init={run_dir / 'context-decoder.safetensors'}"]
        elif k < 4:  # (stages 2-3, when listed) the configs name runs/embedded; follow --run-dir instead
            cmd += ["--set", f"model.init_from={run_dir / f'stage{k - 1}' / 'final'}"]
        else:
            cmd += ["--set", f"model.init_from={prepare_fsq_init(run_dir)}"]
        if "3d" in TrainConfig.from_yaml(f"embedded_stage{k}").tasks:
            cmd += ["--set", f"tasks.3d.source.paths=[{run_dir / 'voxels'}]"]
        print("$", shlex.join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        (run_dir / f"stage{k}" / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")


def fit_gs_decoder(run_dir: Path, steps: int) -> Path:
    """Fit the Gaussian decoder on the training meshes (resumable); returns its ``final/`` folder. With ``steps``
    0 (the default) it is the surfel prior with its zero head: fits at 96 px made it worse (see ``GS_CONFIG``)."""
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder
    from ..training.fit_gaussian_decoder import fit_gaussian_decoder, prepare_asset
    from ..utils.media_sets import bundled_folder

    final = run_dir / "gs" / "final"
    if (final / "config.json").is_file():
        return final
    torch.manual_seed(0)
    decoder = ATokenGaussianDecoder(**GS_CONFIG)
    if steps == 0:
        save_atomically(decoder, final)
        return final
    assets = [prepare_asset(bundled_folder(b) / n) for b, n in TRAIN_MESHES]
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fit_gaussian_decoder(decoder, assets, run_dir / "gs", steps=steps, device=device)
    (run_dir / "gs" / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    return final


def export(run_dir: Path) -> None:
    """Copy the continuous model and stage 4 (FSQ) in float32 and the Gaussian decoder in bf16 into the package,
    atomically. Both AToken models run on the large constant channels their linear start put in the hidden states,
    which bf16 rounding disturbs (measured: held-out clip 45.9 -> 44.4 dB; v2's FSQ re-coding 22.6 -> 14.9 dB)."""
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder

    for cls, src, dst, dtype in (
            (AutoencoderAToken, continuous_model(run_dir), DEFAULT_MODEL_DIR, torch.float32),
            (AutoencoderAToken, run_dir / "stage4" / "final", DEFAULT_DISCRETE_DIR, torch.float32),
            (ATokenGaussianDecoder, run_dir / "gs" / "final", DEFAULT_GS_DECODER_DIR, torch.bfloat16)):
        model = cls.from_pretrained(src, torch_dtype=dtype)
        if dst == DEFAULT_DISCRETE_DIR:  # the same finish, on what the FSQ decoder reads
            finish(model.eval(), "FSQ")
        save_atomically(model, dst, overwrite=True)
        print(f"exported {src} -> {dst}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/embedded")
    p.add_argument("--launcher", default=f"{sys.executable} -m atoken_diffusers",
                   help="how to start `atoken` (e.g. 'accelerate launch --multi_gpu --num_processes 2 -m atoken_diffusers')")
    p.add_argument("--gs-steps", type=int, default=0, help="fit the Gaussian decoder's corrections this many steps")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    ensure_photographs()
    fit_baselines(run_dir)
    pack_meshes(run_dir / "voxels")
    train_stages(run_dir, shlex.split(args.launcher))
    fit_gs_decoder(run_dir, args.gs_steps)
    export(run_dir)
    from .evaluate import evaluate_all

    report = evaluate_all(DEFAULT_MODEL_DIR, DEFAULT_DISCRETE_DIR, DEFAULT_GS_DECODER_DIR)
    write_atomically(WEIGHTS_DIR / "metrics.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    from .model_card import write_card

    print(write_card(run_dir, args.gs_steps))


if __name__ == "__main__":
    main()
