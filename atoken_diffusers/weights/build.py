"""Rebuild the embedded default from scratch, resumably, with one command (run from the repository root):

    python -m atoken_diffusers.weights.build [--run-dir runs/embedded] [--launcher "accelerate launch ..."]

1. packs the training meshes (gradio's Bunny, face, Fox, sofia; pyvista's airplane, ant, nut) into voxel features;
2. trains the four curriculum stages (``embedded_stage1..4`` configs: images, + video, + 3D, FSQ), each resuming
   from its checkpoints and skipped once its ``final/`` exists;
3. fits the Gaussian decoder on the packed meshes (resumable);
4. exports bf16 copies into ``atoken_diffusers/weights/`` and measures the held-out quality (``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import DEFAULT_DISCRETE_DIR, DEFAULT_GS_DECODER_DIR, DEFAULT_MODEL_DIR, WEIGHTS_DIR

TRAIN_MESHES = [("gradio:models3d", n) for n in ("Bunny.obj", "face.obj", "Fox.gltf", "sofia.stl")] + \
               [("pyvista", n) for n in ("airplane.ply", "ant.ply", "nut.ply")]
GS_CONFIG = dict(model_channels=96, num_blocks=2, num_heads=2, mlp_channels=384, num_gaussians=8)


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


def train_stages(run_dir: Path, launcher: list[str]) -> None:
    """Run the four curriculum stages in ``run_dir``, skipping those whose ``final/`` exists."""
    for k in range(1, 5):
        if (run_dir / f"stage{k}" / "final" / "config.json").is_file():  # final/ appears only complete (renamed)
            continue
        cmd = [*launcher, "train", f"embedded_stage{k}", "--output-dir", str(run_dir / f"stage{k}")]
        if k > 1:  # the configs name runs/embedded; follow --run-dir instead
            cmd += ["--set", f"model.init_from={run_dir / f'stage{k - 1}' / 'final'}"]
        if k > 2:
            cmd += ["--set", f"tasks.3d.source.paths=[{run_dir / 'voxels'}]"]
        print("$", shlex.join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        (run_dir / f"stage{k}" / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")


def fit_gs_decoder(run_dir: Path, steps: int) -> Path:
    """Fit the Gaussian decoder on the training meshes (resumable); returns its ``final/`` folder."""
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder
    from ..training.gaussian_decoder import fit_gaussian_decoder, prepare_asset
    from ..utils.media_sets import bundled_folder

    final = run_dir / "gs" / "final"
    if not (final / "config.json").is_file():
        torch.manual_seed(0)
        assets = [prepare_asset(bundled_folder(b) / n) for b, n in TRAIN_MESHES]
        fit_gaussian_decoder(ATokenGaussianDecoder(**GS_CONFIG), assets, run_dir / "gs", steps=steps)
    return final


def export(run_dir: Path) -> None:
    """Copy stage 3 (continuous), stage 4 (FSQ) and the Gaussian decoder into the package as bf16, atomically."""
    from ..conversion.original import save_atomically
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..three_d.gaussian_decoder import ATokenGaussianDecoder

    for cls, src, dst in ((AutoencoderAToken, run_dir / "stage3" / "final", DEFAULT_MODEL_DIR),
                          (AutoencoderAToken, run_dir / "stage4" / "final", DEFAULT_DISCRETE_DIR),
                          (ATokenGaussianDecoder, run_dir / "gs" / "final", DEFAULT_GS_DECODER_DIR)):
        save_atomically(cls.from_pretrained(src, torch_dtype=torch.bfloat16), dst, overwrite=True)
        print(f"exported {src} -> {dst}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/embedded")
    p.add_argument("--launcher", default=f"{sys.executable} -m atoken_diffusers",
                   help="how to start `atoken` (e.g. 'accelerate launch --multi_gpu --num_processes 2 -m atoken_diffusers')")
    p.add_argument("--gs-steps", type=int, default=300)
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    pack_meshes(run_dir / "voxels")
    train_stages(run_dir, shlex.split(args.launcher))
    fit_gs_decoder(run_dir, args.gs_steps)
    export(run_dir)
    from .evaluate import evaluate_all

    report = evaluate_all(DEFAULT_MODEL_DIR, DEFAULT_DISCRETE_DIR, DEFAULT_GS_DECODER_DIR)
    (WEIGHTS_DIR / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    from .model_card import write_card

    print(write_card(run_dir, args.gs_steps))


if __name__ == "__main__":
    main()
