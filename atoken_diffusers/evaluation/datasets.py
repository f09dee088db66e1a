"""What ``atoken evaluate`` scores and how each item is brought to the common input (the protocol).

Items come from folders, globs, files, bundled sets (``skimage``, ``gradio:images``, ``gradio:videos``,
``gradio:models3d``, ... see ``utils.media_sets``) or :data:`HELD_OUT_SET`, the 10 photographs the embedded model
never saw in training (``weights.evaluate.HELD_OUT_IMAGES``).

Protocol (every model sees exactly the same tensor):
- images: ``fit="crop"`` resizes the shorter side to ``resolution`` (bilinear, antialiased) and centre-crops a square
  (:func:`square`, the protocol of ``python -m atoken_diffusers.weights.evaluate``); ``fit="pad"`` resizes the longer
  side to ``resolution`` and pads the rest of the square by repeating the edge pixels; metrics then cover the picture
  only, not the padding.
- videos: the first ``frames`` frames, each frame as an image.
- meshes: the 3D recipe of ``three_d.pipeline.reconstruct_mesh`` (24 packing views, 8 held-out views, 256 px).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..utils.media import load_image, load_video, resize_centre_crop
from ..utils.media_sets import EXTS, bundled_folder, expand_paths

HELD_OUT_SET = "atoken:held-out"
KINDS = ("images", "videos", "meshes")
FITS = ("crop", "pad")


def square(x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(..., 3, H, W) -> shorter side resized to ``size`` (bilinear, antialiased), centre-cropped, in [-1, 1]."""
    return resize_centre_crop(x, size, mode="bilinear").clamp(-1, 1)


def pad_square(x: torch.Tensor, size: int = 256) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """(..., 3, H, W) -> longer side resized to ``size`` (bilinear, antialiased), edge-padded to ``size`` x ``size``;
    also the picture's region (top, left, height, width) inside the square."""
    lead, (h, w) = x.shape[:-3], x.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    flat = x.reshape(-1, *x.shape[-3:]).float()
    if new != (h, w):
        flat = F.interpolate(flat, size=new, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - new[0]) // 2, (size - new[1]) // 2
    flat = F.pad(flat, (left, size - new[1] - left, top, size - new[0] - top), mode="replicate")
    return flat.reshape(*lead, 3, size, size).clamp(-1, 1), (top, left, *new)


@dataclass(frozen=True)
class Protocol:
    """How items become model inputs: ``resolution`` (square side, pixels), ``fit`` ("crop" or "pad"), ``frames``
    (video frames kept from the start)."""

    resolution: int = 256
    fit: str = "crop"
    frames: int = 16

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"--fit must be one of {FITS}; got {self.fit!r}.")
        if self.resolution < 16 or self.frames < 1:
            raise ValueError(f"--resolution must be >= 16 and --frames >= 1; got {self.resolution} and {self.frames}.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Item:
    """One file to score: its ``kind`` (images, videos, meshes), path and a short display ``name``."""

    kind: str
    path: Path
    name: str

    def key(self, index: int) -> str:
        """A file name for this item's results: its position plus a hash of its path, size and modification time
        (an edited file is scored again)."""
        stat = self.path.stat()
        digest = hashlib.sha256(f"{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return f"{index:05d}-{digest[:12]}"


@dataclass
class Prepared:
    """An image (1, 3, S, S) or clip (1, 3, T, S, S) in [-1, 1] and the region metrics cover (top, left, h, w)."""

    x: torch.Tensor
    region: tuple[int, int, int, int]

    def crop(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` (shaped like ``x``) cut to the scored region."""
        top, left, h, w = self.region
        return y[..., top:top + h, left:left + w]


def _held_out_items() -> list[Item]:
    from ..weights.held_out import HELD_OUT_IMAGES

    return [Item("images", bundled_folder(bundle) / name, name) for bundle, name in HELD_OUT_IMAGES]


def discover(data: list[str | os.PathLike], kinds: tuple[str, ...] = KINDS, limit: int | None = None) -> list[Item]:
    """The items named by ``data`` (folders, globs, files, bundled set names, :data:`HELD_OUT_SET`), kinds in the order
    of :data:`KINDS`, files sorted within a kind, at most ``limit`` per kind.

    Raises:
        FileNotFoundError naming the entry when something names no media of the requested kinds.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--kind {unknown[0]}: choose from {', '.join(KINDS)}.")
    items: list[Item] = []
    plain = [str(d) for d in data if str(d) != HELD_OUT_SET]
    if len(plain) < len(data) and "images" in kinds:
        items += _held_out_items()
    for kind in kinds:
        if not plain:
            break
        try:
            files = expand_paths(plain, kind)
        except FileNotFoundError as err:
            if "matches nothing" in str(err) or "needs the" in str(err):
                raise FileNotFoundError(f"DATA: {err}") from None
            continue  # no files of this kind
        items += [Item(kind, f, f.name) for f in files]
    if not items:
        wanted = sorted(set().union(*(EXTS[k] for k in kinds)))
        raise FileNotFoundError(f"DATA {' '.join(map(str, data))}: no {'/'.join(kinds)} files ({', '.join(wanted)}).")
    if limit is not None:
        per_kind: dict[str, int] = {}
        kept = []
        for item in items:
            per_kind[item.kind] = per_kind.get(item.kind, 0) + 1
            if per_kind[item.kind] <= limit:
                kept.append(item)
        items = kept
    return items


def prepare(item: Item, protocol: Protocol) -> Prepared:
    """Load an image or video item and apply the protocol.

    Raises:
        ValueError naming the file when it cannot be read.
    """
    size = protocol.resolution
    try:
        if item.kind == "images":
            raw = load_image(item.path)
        else:
            raw = load_video(item.path, max_frames=protocol.frames)[0].transpose(1, 2)  # (1, T, 3, H, W)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{item.path}: unreadable {item.kind[:-1]} ({err}).") from None
    if protocol.fit == "crop":
        x, region = square(raw, size), (0, 0, size, size)
    else:
        x, region = pad_square(raw, size)
    return Prepared(x if item.kind == "images" else x.transpose(1, 2), region)
