"""Per-channel latent statistics and the latent normalisation generators train in.

Generators see ``(z - latents_mean) / latents_std`` per channel (Lightning-DiT style), with the statistics stored in
the autoencoder config (``latents_mean`` / ``latents_std``); a config without them means no normalisation. The
statistics come from a dataset: pre-encoded shards (fast) or images encoded on the fly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch

from ...utils.atomic import write_atomically


class RunningMoments:
    """Per-channel mean and standard deviation accumulated in float64 over batches of (B, C, ...) latents."""

    def __init__(self):
        self.count = 0
        self.sum = None
        self.sum_sq = None

    def update(self, z: torch.Tensor) -> None:
        flat = z.detach().double().movedim(1, 0).reshape(z.shape[1], -1)
        if self.sum is None:
            self.sum = torch.zeros(flat.shape[0], dtype=torch.float64)
            self.sum_sq = torch.zeros_like(self.sum)
        self.sum += flat.sum(1).cpu()
        self.sum_sq += flat.pow(2).sum(1).cpu()
        self.count += flat.shape[1]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (C,) float32. std is the population standard deviation, floored at 1e-6."""
        if not self.count:
            raise ValueError("no latents were seen; the dataset is empty.")
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.pow(2)).clamp_min(0)
        return mean.float(), var.sqrt().clamp_min(1e-6).float()


def latent_normalization(config, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) (C,) float32 from an autoencoder config (a ``FrozenDict``, dict or model), or None when the config
    has no statistics."""
    config = getattr(config, "config", config)
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ValueError("the autoencoder config has only one of latents_mean / latents_std; run `atoken "
                         "latent-stats` again to write both.")
    mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    c = channels or config.get("latent_channels")
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(f"latents_mean/latents_std must have {c} entries (latent_channels); got "
                         f"{tuple(mean.shape)} / {tuple(std.shape)}. Recompute them with `atoken latent-stats`.")
    if not (std > 0).all():
        raise ValueError("latents_std must be positive in every channel; recompute it with `atoken latent-stats`.")
    return mean, std


def _shape(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return v.to(z.device, z.dtype).view(1, -1, *([1] * (z.ndim - 2)))


def normalize_latents(z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """(B, C, ...) raw latents -> (z - mean) / std (identity when ``stats`` is None)."""
    return z if stats is None else (z - _shape(stats[0], z)) / _shape(stats[1], z)


def denormalize_latents(z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Inverse of :func:`normalize_latents`."""
    return z if stats is None else z * _shape(stats[1], z) + _shape(stats[0], z)


def stats_from_latents(batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    moments = RunningMoments()
    for z in batches:
        moments.update(z)
    return moments.result()


def stats_from_shards(folder: str | os.PathLike, kind: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of the latents in shards written by ``atoken encode-dataset`` (one shard in memory at a time)."""
    from .shards import LatentShards

    return stats_from_latents(LatentShards(folder, kind=kind, in_memory=False).iter_latents())


@torch.no_grad()
def stats_from_media(vae, paths: list, resolution: int, batch_size: int = 16,
                     videos: bool = False, frames: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of posterior-mean latents of media files (images, or videos with ``videos``), resized and centre
    cropped to ``resolution``; folders, globs and bundled sets as in ``atoken train``."""
    from .image_folder import list_media, load_batch

    files = list_media(paths, "videos" if videos else "images")
    moments = RunningMoments()
    for start in range(0, len(files), batch_size):
        x = load_batch(files[start:start + batch_size], resolution, frames if videos else None)
        moments.update(vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode())
    return moments.result()


def write_latent_stats(model_dir: str | os.PathLike, mean: torch.Tensor, std: torch.Tensor) -> Path:
    """Store the statistics in ``model_dir/config.json`` (written to a temporary file, then renamed)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json; pass a converted AToken folder.")
    config = json.loads(path.read_text())
    channels = config.get("latent_channels")
    if channels is not None and mean.numel() != channels:
        raise ValueError(f"the statistics have {mean.numel()} channels but {model_dir} has latent_channels="
                         f"{channels}; compute them with this model.")
    config["latents_mean"] = [round(float(v), 7) for v in mean]
    config["latents_std"] = [round(float(v), 7) for v in std]
    return write_atomically(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
