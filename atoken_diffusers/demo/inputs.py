"""Uploads in: size and length limits, and readers that turn a bad file into a :class:`DemoInputError` whose message
the app shows as it is (never a stack trace)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.media import VIDEO_SUFFIXES, load_video, to_tensor, to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")


# The command-line flag behind each size limit (`atoken demo`), for messages.
POSITIVE_LIMITS = {"upload_mb": "--max-upload-mb", "image_side": "--max-image-side", "image_megapixels": None,
                   "video_seconds": "--max-video-seconds", "video_frames": "--max-frames",
                   "video_side": "--max-video-side"}


class DemoInputError(ValueError):
    """Something is wrong with what the user gave (file, setting, model choice); the message says what and how to fix
    it."""


@dataclass(frozen=True)
class Limits:
    """What the demo accepts. Larger images and videos are scaled down (longer side), longer videos are cut to their
    first ``video_frames`` frames; files over ``upload_mb`` and videos over ``video_seconds`` are refused.

    ``input_folders``: the only folders files are read from (the app sets Gradio's upload cache), plus the single
    files in ``input_files`` (the bundled examples); None reads any path (library use, never the served app).
    """

    upload_mb: float = 100.0
    image_side: int = 1024
    image_megapixels: float = 50.0
    video_seconds: float = 120.0
    video_frames: int = 32
    video_side: int = 256
    input_folders: tuple[str, ...] | None = None
    input_files: tuple[str, ...] = ()

    def __post_init__(self):
        for name, flag in POSITIVE_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # NaN is not > 0
                flag = f" ({flag})" if flag else ""
                raise ValueError(f"Limits.{name}{flag} must be a positive number; got {value!r}.")
        # Kept resolved, so that a path is compared with what the folders really are (symlinked /tmp on macOS).
        if self.input_folders is not None:
            object.__setattr__(self, "input_folders", tuple(os.path.realpath(p) for p in self.input_folders))
        object.__setattr__(self, "input_files", tuple(os.path.realpath(p) for p in self.input_files))

    def readable(self, path: Path) -> bool:
        """Whether the app may read ``path``: inside ``input_folders`` or one of ``input_files`` (symlinks and
        ``..`` resolved first, so neither leads out)."""
        if self.input_folders is None:
            return True
        real = os.path.realpath(path)
        return real in self.input_files or any(os.path.commonpath([real, root]) == root
                                               for root in self.input_folders)

    def image_text(self) -> str:
        return (f"Images up to {self.upload_mb:g} MB and {self.image_megapixels:g} megapixels; the longer side is "
                f"scaled down to {self.image_side} px.")

    def video_text(self) -> str:
        return (f"Videos up to {self.upload_mb:g} MB and {self.video_seconds:g} s; the first {self.video_frames} "
                f"frames are reconstructed, the longer side scaled down to {self.video_side} px (even sizes).")

    def mesh_text(self) -> str:
        return f"Meshes ({', '.join(MESH_SUFFIXES)}) up to {self.upload_mb:g} MB."


def check_upload(path, limits: Limits, suffixes: tuple[str, ...] | set[str], kind: str) -> Path:
    """The uploaded file as a Path, after checking that there is one, that the app may read it (see
    :meth:`Limits.readable`), of a known type, within the size limit."""
    if not path:
        raise DemoInputError(f"Upload {kind} first.")
    path = Path(path)
    if not limits.readable(path):  # checked first: whether a server file exists is not revealed either
        raise DemoInputError(f"{path.name!r} was not uploaded to this demo, and files on the server are not read; "
                             f"upload {kind} instead.")
    if not path.is_file():
        raise DemoInputError(f"The uploaded {kind} {path.name!r} is missing on the server; upload it again.")
    if path.suffix.lower() not in suffixes:
        known = ", ".join(sorted(suffixes))
        raise DemoInputError(f"{path.name!r} is not {kind} file this demo reads; use one of {known}.")
    size = path.stat().st_size
    if size == 0:
        raise DemoInputError(f"{path.name!r} is empty.")
    if size > limits.upload_mb * 1e6:
        raise DemoInputError(f"{path.name!r} is {size / 1e6:.1f} MB; the limit is {limits.upload_mb:g} MB.")
    return path


def _fit(height: int, width: int, side: int, even: bool = False) -> tuple[int, int]:
    """Size with the longer side at most ``side``, aspect ratio kept (rounded down to even sizes if ``even``)."""
    scale = min(1.0, side / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    if even:
        h, w = max(2, h // 2 * 2), max(2, w // 2 * 2)
    return h, w


def read_image(path, limits: Limits) -> tuple[torch.Tensor, dict]:
    """A checked upload -> (1, 3, H, W) in [-1, 1], scaled down to the limit, and facts about it."""
    from PIL import Image

    path = check_upload(path, limits, IMAGE_SUFFIXES, "an image")
    try:
        with Image.open(path) as im:
            if im.width * im.height > limits.image_megapixels * 1e6:
                raise DemoInputError(f"{path.name!r} is {im.width} x {im.height} pixels; the limit is "
                                     f"{limits.image_megapixels:g} megapixels.")
            rgb = im.convert("RGB")
    except DemoInputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DemoInputError(f"{path.name!r} is not an image this demo can read ({err.__class__.__name__}); upload "
                             "a PNG, JPEG or WebP picture.") from None
    size = (rgb.height, rgb.width)
    h, w = _fit(*size, limits.image_side)
    if (h, w) != size:
        rgb = rgb.resize((w, h), Image.Resampling.LANCZOS)
    return to_tensor(np.asarray(rgb))[None], {"file": path.name, "size": [h, w], "uploaded_size": list(size)}


def read_video(path, limits: Limits) -> tuple[torch.Tensor, float, dict]:
    """A checked upload -> (1, 3, T, H, W) in [-1, 1] (first ``video_frames`` frames, scaled down to even sizes
    within the limit and kept on the uint8 grid), its frame rate, and facts about it."""
    import av

    path = check_upload(path, limits, VIDEO_SUFFIXES, "a video")
    unreadable = f"{path.name!r} is not a video this demo can read"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DemoInputError(f"{path.name!r} has no video stream.")
            stream = container.streams.video[0]
            seconds = container.duration / av.time_base if container.duration else None
            if seconds is None and stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
        if seconds is not None and seconds > limits.video_seconds:
            raise DemoInputError(f"{path.name!r} lasts {seconds:.1f} s; the limit is {limits.video_seconds:g} s.")
        x, fps = load_video(path, max_frames=limits.video_frames)
    except DemoInputError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise DemoInputError(f"{unreadable} (truncated or damaged? {err.__class__.__name__}); upload an MP4, WebM "
                             "or MOV file.") from None
    size = tuple(x.shape[-2:])
    h, w = _fit(*size, limits.video_side, even=True)
    if (h, w) != size:
        frames = F.interpolate(x[0].transpose(0, 1), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = to_tensor(to_uint8(frames)).transpose(0, 1)[None]  # back on the uint8 grid: what is shown is what is scored
    info = {"file": path.name, "frames": x.shape[2], "fps": fps, "size": [h, w], "uploaded_size": list(size),
            "seconds": seconds}
    return x, fps, info


def friendly_path_error(err: Exception, path) -> str:
    """An error message with the server-side upload path replaced by the file name."""
    return str(err).replace(os.fspath(path), Path(path).name)
