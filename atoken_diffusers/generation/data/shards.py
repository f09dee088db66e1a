"""Reading the latent shards that ``atoken encode-dataset`` writes, as a dataset for generator training.

A shard folder holds ``manifest.json`` (written last, when every shard is complete) and safetensors shards
``{kind}-{i:05d}.safetensors`` with, per sample n:

- ``latents``: (N, C, h, w) float32 posterior means (videos: (N, C, t, h, w));
- ``indices``: (N, K, h, w) int16/int32 FSQ indices (models with a quantizer only);
- ``labels``: (N,) int64 class ids (sub-folder order, see ``manifest["classes"]``);
- ``text_embeds``: (N, D) float32 pooled caption embeddings (when encoded with a text model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

MANIFEST = "manifest.json"
FORMAT = "atoken-latent-shards"


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        hint = (" It looks like an unfinished `atoken encode-dataset` run: run the same command again to finish it."
                if (Path(folder) / "plan.json").is_file() else " Create it with `atoken encode-dataset DATA --model "
                "DIR --out FOLDER`.")
        raise FileNotFoundError(f"{folder} has no {MANIFEST}.{hint}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an AToken latent-shard manifest (format {manifest.get('format')!r}).")
    return manifest


class LatentShards(torch.utils.data.Dataset):
    """Samples of one media kind of a shard folder.

    Args:
        folder: the ``--out`` folder of ``atoken encode-dataset``.
        kind: ``images`` or ``videos``.
        in_memory: load every shard at once (fast random batches); otherwise shards are read on demand, one cached.
    """

    def __init__(self, folder: str | os.PathLike, kind: str = "images", in_memory: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        kinds = self.manifest["kinds"]
        if kind not in kinds or not kinds[kind]["count"]:
            raise ValueError(f"{folder} holds no {kind} (it has: {', '.join(k for k in kinds if kinds[k]['count'])}).")
        self.kind = kind
        self.shards = [self.folder / s["file"] for s in kinds[kind]["shards"]]
        counts = torch.tensor([s["count"] for s in kinds[kind]["shards"]])
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self._cache: tuple[int, dict] | None = None
        self.tensors = self._load_all() if in_memory else None

    # ------------------------------------------------------------------------------------------------ facts

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(C, h, w) for images, (C, t, h, w) for videos."""
        return tuple(self.manifest["kinds"][self.kind]["latent_shape"])

    @property
    def model(self) -> dict:
        """The autoencoder the shards were encoded with: ``path``, ``latent_channels``, ``num_codebooks``,
        ``codebook_size`` (None without a quantizer)."""
        return dict(self.manifest["model"])

    @property
    def has_indices(self) -> bool:
        return self.manifest["model"].get("num_codebooks") is not None

    @property
    def text_dim(self) -> int | None:
        return self.manifest.get("text_dim")

    def __len__(self) -> int:
        return int(self.starts[-1])

    # ------------------------------------------------------------------------------------------------ reading

    def _read(self, i: int) -> dict:
        if self._cache is None or self._cache[0] != i:
            self._cache = (i, load_file(self.shards[i]))
        return self._cache[1]

    def _load_all(self) -> dict[str, torch.Tensor]:
        parts = [load_file(p) for p in self.shards]
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def iter_latents(self):
        """Latents shard after shard, (n, C, ...) each."""
        for path in self.shards:
            with safe_open(path, framework="pt") as f:
                yield f.get_tensor("latents")

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Samples ``index`` (B,) stacked: latents (B, C, ...) float32, indices (B, K, h, w) int64, labels (B,),
        text_embeds (B, D) when present."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if ((index < 0) | (index >= len(self))).any():
            raise IndexError(f"sample index out of range [0, {len(self)}).")
        if self.tensors is not None:
            out = {k: v[index] for k, v in self.tensors.items()}
        else:
            shard = torch.searchsorted(self.starts, index, right=True) - 1
            out = {}
            for s in shard.unique().tolist():  # one read per shard touched
                where = (shard == s).nonzero()[:, 0]
                for key, value in self._read(s).items():
                    if key not in out:
                        out[key] = value.new_empty((index.shape[0], *value.shape[1:]))
                    out[key][where] = value[index[where] - self.starts[s]]
        if "indices" in out:
            out["indices"] = out["indices"].long()
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch(torch.tensor([i])).items()}
