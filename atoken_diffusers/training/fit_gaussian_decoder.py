"""Fitting a Gaussian-splat decoder: voxel features -> Gaussians, rendered with the differentiable PyTorch
rasteriser and compared (L1) with ray-cast renders of the mesh the voxels came from.

The inputs are the voxel features in the AToken decoder's [-1, 1] range, so a decoder fitted on packed features
plugs in after any AToken model that reconstructs them. Checkpoints (decoder, optimiser, step) are written atomically
and resumed; nothing is unpickled beyond tensors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..three_d.camera import sphere_cameras
from ..three_d.gaussians import Gaussians
from ..three_d.mesh import load_mesh
from ..three_d.pipeline import pack_mesh, render_views
from ..three_d.render_mesh import render_mesh
from ..utils.atomic import save_atomically, write_atomically


@dataclass
class SplatAsset:
    """One training object: voxel ``coords`` (N, 3), ``feats`` (N, 768) in [-1, 1], ``targets`` (V, 3, S, S) renders
    in [0, 1] from ``cameras``."""

    coords: torch.Tensor
    feats: torch.Tensor
    targets: torch.Tensor
    cameras: list


def prepare_asset(mesh_path, views: int = 24, size: int = 96) -> SplatAsset:
    """Pack a mesh into voxel features and ray-cast its ``views`` target renders at ``size`` px."""
    mesh = load_mesh(mesh_path)
    coords, feats = pack_mesh(mesh)
    cameras = sphere_cameras(views, size=size, offset=0.25)
    return SplatAsset(coords, feats * 2 - 1, render_mesh(mesh, cameras).rgb, cameras)


def splats(decoder, coords: torch.Tensor, feats: torch.Tensor) -> Gaussians:
    """Gaussians of one object from its voxel ``coords`` (N, 3) and features ``feats`` (N, 768) in [-1, 1]."""
    out = decoder(feats.to(decoder.dtype), torch.cat([torch.zeros_like(coords[:, :1]), coords], 1))
    return Gaussians(out.xyz.float(), out.features_dc.reshape(-1, 3).float(), out.scaling.float(),
                     out.rotation.float(), out.opacity.float())


def fit_gaussian_decoder(decoder, assets: list[SplatAsset], out_dir: str | os.PathLike, steps: int = 300,
                         views_per_step: int = 3, lr: float = 1e-3, seed: int = 0, checkpoint_every: int = 50,
                         log=print, device: str | torch.device | None = None) -> list[float]:
    """Train ``decoder`` for ``steps`` steps (one asset per step, round robin; random views), resuming from
    ``out_dir/checkpoint.pt``; the fitted decoder is saved to ``out_dir/final`` (on the CPU). ``device``: where to
    train (default: the decoder's; assets move there one step at a time). Returns the losses of this call."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else decoder.device
    decoder.to(device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    start, ckpt = 0, out / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log(f"resumed Gaussian decoder at step {start}")
    decoder.train()
    losses = []
    for step in range(start, steps):
        asset = assets[step % len(assets)]
        rng = np.random.default_rng([seed, step])
        pick = rng.choice(len(asset.cameras), size=min(views_per_step, len(asset.cameras)), replace=False)
        for group in optimizer.param_groups:  # cosine decay to 10 %; a Python float, so checkpoints load weights-only
            group["lr"] = float(lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps))))
        gaussians = splats(decoder, asset.coords.to(device), asset.feats.to(device))
        renders = render_views(gaussians, [asset.cameras[i] for i in pick])
        loss = (renders - asset.targets[torch.as_tensor(pick)].to(device)).abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            state = {"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}
            write_atomically(ckpt, lambda tmp: torch.save(state, tmp))
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": step + 1, "loss": float(np.mean(losses[-checkpoint_every:]))}) + "\n")
            log(f"gaussian decoder step {step + 1}/{steps}: L1 {np.mean(losses[-checkpoint_every:]):.4f}")
    save_atomically(decoder.eval().cpu(), out / "final", overwrite=True)
    return losses
