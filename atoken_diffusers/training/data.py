"""Training data: random crops of images, random clips of videos and 3D voxel-feature sets, packed into one sparse
token batch per step (every sample keeps its own size; no padding to a common shape).

Sampling is a pure function of a seed: ``Batch`` contents depend only on (run seed, micro-step, process), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..three_d.voxelize import load_voxel_features
from ..tokens.patchify import PATCH_SIZE, grid_to_tokens, pad_to_patches, tokens_to_grid
from ..tokens.sparse import SparseTokens
from ..tokens.voxels import VOXEL_FEATURES, voxels_to_tokens
from ..utils.media_sets import captions_for, expand_paths
from .config import SourceConfig

MAX_CACHED_FRAMES = 256


@dataclass
class Batch:
    """One task's packed batch: ``tokens`` (N, 3072) patch vectors, per-sample ``targets`` in [-1, 1] (images
    (3, H, W), videos (3, T, H, W), voxel features (n, 768)), token ``grids`` (t, h, w) and ``captions``."""

    kind: str
    tokens: SparseTokens
    targets: list[torch.Tensor]
    grids: list[tuple | None]
    captions: list[str]

    def split(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """Decoded (N, 3072) patch vectors (input row order) -> per-sample reconstructions shaped like the targets."""
        counts = torch.bincount(self.tokens.coords[:, 0], minlength=len(self.targets)).tolist()
        out = []
        for p, target, grid in zip(patches.split(counts), self.targets, self.grids):
            if grid is None:  # voxels
                out.append(p[:, :VOXEL_FEATURES])
                continue
            clip = tokens_to_grid(p, (1, *grid), PATCH_SIZE, channels=3)[0]
            out.append(clip[:, 0, : target.shape[-2], : target.shape[-1]] if target.ndim == 3
                       else clip[:, : target.shape[1], : target.shape[-2], : target.shape[-1]])
        return out


def _uint8_to_unit(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1


def _side(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


class ImageSource:
    """Random resized crops (area 35-100 %, aspect 3/4-4/3) with horizontal flips, at a size drawn from ``sizes``."""

    kind = "images"

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.files = expand_paths(cfg.paths, "images", cfg.exclude)
        self.captions = captions_for(self.files, cfg.captions)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            from PIL import Image

            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")
                limit = 2 * max(max(_side(s)) for s in self.cfg.sizes)
                if max(im.size) > limit:  # keep the cache small: crops never need more than twice the output
                    im.thumbnail((limit, limit), Image.Resampling.LANCZOS)
                self._cache[i] = np.array(im)  # writable copy (torch.from_numpy needs one)
        return self._cache[i]

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
        i = int(rng.integers(len(self.files)))
        img = self._image(i)
        h, w = _side(self.cfg.sizes[int(rng.integers(len(self.cfg.sizes)))])
        crop = _random_crop(img, rng, h / w)
        x = F.interpolate(_uint8_to_unit(crop)[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        if rng.random() < 0.5:
            x = x.flip(-1)
        return x.clamp(-1, 1), self.captions[i]


def _random_crop(img: np.ndarray, rng: np.random.Generator, aspect: float) -> np.ndarray:
    """A crop of 35-100 % of the area whose height / width is ``aspect`` times a factor in [3/4, 4/3]."""
    H, W = img.shape[:2]
    area = H * W * rng.uniform(0.35, 1.0)
    ratio = aspect * np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    # ratio is height / width: h = sqrt(area * ratio), w = sqrt(area / ratio)
    ch, cw = min(H, max(8, int(round(np.sqrt(area * ratio))))), min(W, max(8, int(round(np.sqrt(area / ratio)))))
    y, x = int(rng.integers(H - ch + 1)), int(rng.integers(W - cw + 1))
    return img[y : y + ch, x : x + cw]


class VideoSource:
    """Random clips of ``frames`` frames at a stride drawn from ``strides``, square crops of side ``sizes[k]``.
    Each file is decoded once (downscaled, at most 256 frames) and kept in memory."""

    kind = "videos"

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.files = expand_paths(cfg.paths, "videos", cfg.exclude)
        self.captions = captions_for(self.files, cfg.captions)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _frames(self, i: int) -> np.ndarray:
        if i not in self._cache:
            import av

            short = int(1.15 * max(max(_side(s)) for s in self.cfg.sizes))
            frames = []
            with av.open(str(self.files[i])) as container:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    scale = short / min(frame.width, frame.height)
                    w, h = max(short, round(frame.width * scale)), max(short, round(frame.height * scale))
                    frames.append(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())
                    if len(frames) >= MAX_CACHED_FRAMES:
                        break
            if len(frames) < self.cfg.frames:
                raise ValueError(f"{self.files[i]}: {len(frames)} frames, fewer than source.frames = {self.cfg.frames}; "
                                 "lower it or exclude the file.")
            self._cache[i] = np.stack(frames)
        return self._cache[i]

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
        i = int(rng.integers(len(self.files)))
        video = self._frames(i)
        n = self.cfg.frames
        strides = [s for s in self.cfg.strides if (n - 1) * s < len(video)] or [1]
        stride = strides[int(rng.integers(len(strides)))]
        start = int(rng.integers(len(video) - (n - 1) * stride))
        h, w = _side(self.cfg.sizes[int(rng.integers(len(self.cfg.sizes)))])
        clip = video[start : start + (n - 1) * stride + 1 : stride]
        y, x = int(rng.integers(clip.shape[1] - h + 1)), int(rng.integers(clip.shape[2] - w + 1))
        out = torch.from_numpy(np.ascontiguousarray(clip[:, y : y + h, x : x + w])).permute(3, 0, 1, 2).float() / 127.5 - 1
        return (out.flip(-1) if rng.random() < 0.5 else out), self.captions[i]


class VoxelSource:
    """3D assets as voxel-feature files (``atoken pack-3d``): the occupied voxels, features in [0, 1]; with
    ``max_tokens``, the voxels nearest (Chebyshev distance) to a random occupied voxel, i.e. a cube-shaped crop
    (attention cost grows with the square of the voxel count; RoPE is relative, so crops train the same model)."""

    kind = "voxels"

    def __init__(self, cfg: SourceConfig):
        self.max_tokens = cfg.max_tokens
        self.files = expand_paths(cfg.paths, "voxels", cfg.exclude)
        self.captions = captions_for(self.files, cfg.captions)
        self._cache = [None] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, rng: np.random.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
        i = int(rng.integers(len(self.files)))
        if self._cache[i] is None:
            self._cache[i] = load_voxel_features(self.files[i])
        coords, feats = self._cache[i]
        if self.max_tokens and coords.shape[0] > self.max_tokens:
            centre = coords[int(rng.integers(coords.shape[0]))]
            distance = (coords - centre).abs().amax(dim=1)
            keep = torch.sort(torch.topk(distance, self.max_tokens, largest=False).indices).values
            coords, feats = coords[keep], feats[keep]
        return (coords, feats), self.captions[i]


SOURCES = {"images": ImageSource, "videos": VideoSource, "voxels": VoxelSource}


def make_source(cfg: SourceConfig):
    """The sampler of one task's ``source`` section."""
    if cfg.kind not in SOURCES:
        raise ValueError(f"tasks.<task>.source.kind must be one of {sorted(SOURCES)}; got {cfg.kind!r}.")
    return SOURCES[cfg.kind](cfg)


def make_batch(source, batch_size: int, rng: np.random.Generator) -> Batch:
    """Draw ``batch_size`` samples and pack them into one token set (sample i has batch index i)."""
    parts, targets, grids, captions = [], [], [], []
    for i in range(batch_size):
        item, caption = source.sample(rng)
        captions.append(caption)
        if source.kind == "voxels":
            coords, feats = item
            parts.append(voxels_to_tokens(coords, feats, batch_index=0))
            targets.append(feats * 2 - 1)
            grids.append(None)
            continue
        clip = item[:, None] if item.ndim == 3 else item          # (3, T, H, W)
        padded = pad_to_patches(clip[None], PATCH_SIZE)
        parts.append(grid_to_tokens(padded, PATCH_SIZE))
        grids.append(tuple(s // p for s, p in zip(padded.shape[2:], PATCH_SIZE)))
        targets.append(item)
    kind = {"images": "image", "videos": "video", "voxels": "3d"}[source.kind]
    return Batch(kind, SparseTokens.cat(parts), targets, grids, captions)
