"""Labelled media folders (the ImageFolder convention: one sub-folder per class) and their fixed-size loading.

    root/cat/001.png, root/cat/sub/002.jpg, root/dog/003.png  ->  classes ["cat", "dog"], labels 0, 0, 1

Files directly in ``root`` (no class sub-folders) form a single class named after ``root``. Images are resized so the
shorter side is ``resolution`` (antialiased bicubic) and centre cropped to ``resolution`` x ``resolution``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...utils.media import load_video, resize_centre_crop, to_tensor
from ...utils.media_sets import EXTS, expand_paths
from ..inputs import check_multiple
from ..video.geometry import SPATIAL


@dataclass
class LabelledFiles:
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def check_resolution(resolution: int, name: str = "--resolution", factor: int = SPATIAL) -> int:
    """``resolution`` (pixels) must be a positive multiple of ``factor``, the VAE's spatial compression
    (``vae.spatial_compression_ratio``; AToken's 16 by default)."""
    return check_multiple(resolution, name, factor, "AToken's patch size")


def list_media(paths, kind: str = "images") -> list[Path]:
    """Sorted media files named by folders, files, globs or bundled sets (``skimage``, ``gradio:images``, ...)."""
    return expand_paths([paths] if isinstance(paths, (str, Path)) else list(paths), kind)


def scan_labelled(root: str | Path, kinds: tuple[str, ...] = ("images",)) -> dict[str, LabelledFiles]:
    """Files of each media kind under ``root`` with class labels from the sub-folder names (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DATA {root} is not a folder; pass a folder with one sub-folder per class.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    exts = {kind: EXTS[kind] for kind in kinds}
    out = {kind: LabelledFiles() for kind in kinds}
    groups = [(d.name, d) for d in class_dirs if any(f.suffix.lower() in set().union(*exts.values())
                                                     for f in d.rglob("*"))]
    if not groups:
        groups = [(root.resolve().name, root)]
    classes = [name for name, _ in groups]
    for kind in kinds:
        entry = out[kind]
        entry.classes = classes
        for label, (_, folder) in enumerate(groups):
            recurse = folder is not root
            found = sorted(f for f in (folder.rglob("*") if recurse else folder.iterdir())
                           if f.is_file() and f.suffix.lower() in exts[kind])
            entry.files += found
            entry.labels += [label] * len(found)
    if not any(entry.files for entry in out.values()):
        raise FileNotFoundError(f"no {' or '.join(kinds)} files under {root}.")
    return out


def resize_crop(img: Image.Image, resolution: int) -> Image.Image:
    """Shorter side to ``resolution`` (bicubic, antialiased), then a centre crop to a square."""
    w, h = img.size
    scale = resolution / min(w, h)
    if scale != 1:
        img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                         Image.Resampling.BICUBIC, reducing_gap=None)
    w, h = img.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def load_image_square(path: str | Path, resolution: int) -> torch.Tensor:
    """(3, resolution, resolution) in [-1, 1]."""
    with Image.open(path) as im:
        return to_tensor(np.asarray(resize_crop(im.convert("RGB"), resolution)))


def load_video_square(path: str | Path, resolution: int, frames: int) -> torch.Tensor:
    """(3, frames, resolution, resolution) in [-1, 1]: the first ``frames`` frames (the last one repeated when the
    clip is shorter), resized and centre cropped like images."""
    clip, _ = load_video(path, max_frames=frames)  # (1, 3, T, H, W)
    clip = clip[0].transpose(0, 1)  # (T, 3, H, W)
    if clip.shape[0] < frames:
        clip = torch.cat([clip, clip[-1:].expand(frames - clip.shape[0], -1, -1, -1)])
    return resize_centre_crop(clip, resolution).clamp(-1, 1).transpose(0, 1).contiguous()


def load_batch(files: list[Path], resolution: int, frames: int | None = None) -> torch.Tensor:
    """(B, 3, R, R) images, or (B, 3, frames, R, R) videos when ``frames`` is given."""
    if frames is None:
        return torch.stack([load_image_square(f, resolution) for f in files])
    return torch.stack([load_video_square(f, resolution, frames) for f in files])
