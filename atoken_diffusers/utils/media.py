"""Reading and writing images and videos as tensors in [-1, 1] (Pillow for images, PyAV for video)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import write_atomically

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}

# What the writers produce, by the output's extension: the bytes always match the name (an image saved as ``o.mp4``
# or a video as ``o.png`` would be unreadable by anything that trusts the extension). Images: common RGB formats that
# Pillow writes (.gif is read as a video, so it is no image output); videos: H.264 in the containers that carry it.
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".tga")
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def image_output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for writing an image to ``path`` (by its extension); ValueError naming the accepted
    extensions otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_OUTPUT_SUFFIXES:
        raise ValueError(f"{path}: '{suffix or '(none)'}' is not an image extension this writer knows; use one of "
                         f"{', '.join(IMAGE_OUTPUT_SUFFIXES)}.")
    return Image.registered_extensions()[suffix]


def video_output_container(path: str | os.PathLike) -> str:
    """PyAV's container name for writing an H.264 video to ``path`` (by its extension); ValueError naming the
    accepted extensions otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_CONTAINERS:
        raise ValueError(f"{path}: '{suffix or '(none)'}' is not a video extension this writer knows; use one of "
                         f"{', '.join(VIDEO_CONTAINERS)}.")
    return VIDEO_CONTAINERS[suffix]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(frames, copy=True)).float().movedim(-1, -3) / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().movedim(-3, -1).cpu().numpy()


def resize_centre_crop(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(..., C, H, W) -> (..., C, size, size): shorter side resized to ``size`` (antialiased), then a centre crop.
    Values are not clamped (bicubic may overshoot; callers clamp to their range)."""
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    if new != (h, w):
        flat = x.reshape(-1, *x.shape[-3:]).float()
        x = torch.nn.functional.interpolate(flat, size=new, mode=mode, align_corners=False, antialias=True)
        x = x.reshape(*lead, *new)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return x[..., top : top + size, left : left + size]


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]. A file Pillow cannot read raises ValueError naming it (not Pillow's OSError)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP and refuses above twice that: the warning would be a second stderr line
            # for a legitimate large photograph; the refusal below stays (the memory check then judges the size).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return to_tensor(np.asarray(im.convert("RGB")))[None]
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not a readable image ({err}); pass a PNG, JPEG, WebP, ... file.") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path} has more than {2 * Image.MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb "
                         "limit); downscale it first.") from None


def save_image(x: torch.Tensor, path: str | os.PathLike) -> None:
    """Save a (3, H, W) or (1, 3, H, W) tensor in [-1, 1] in the format of ``path``'s extension
    (:data:`IMAGE_OUTPUT_SUFFIXES`; others raise ValueError before anything is written); written to a temporary file,
    then renamed."""
    image_format = image_output_format(path)
    arr = to_uint8(x[0] if x.ndim == 4 else x)
    write_atomically(path, lambda tmp: Image.fromarray(arr).save(tmp, format=image_format))


def load_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """(1, 3, T, H, W) in [-1, 1] and the frame rate."""
    import av

    frames = []
    try:
        container = av.open(str(path))
    except av.error.InvalidDataError as err:
        raise ValueError(f"{path} is not a readable video ({err.strerror}); pass an MP4, MOV, MKV, WebM, ... "
                         f"file.") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream; pass a video file.")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 24)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path} has no video frames.")
    return to_tensor(np.stack(frames)).transpose(0, 1)[None], fps


def save_video(x: torch.Tensor, path: str | os.PathLike, fps: float = 24.0) -> None:
    """Save (3, T, H, W) or (1, 3, T, H, W) in [-1, 1] as browser-playable H.264 (yuv420p; odd sizes are cropped
    by one pixel) in the container of ``path``'s extension (:data:`VIDEO_CONTAINERS`; others raise ValueError before
    anything is written)."""
    import av

    container_format = video_output_container(path)

    frames = to_uint8((x[0] if x.ndim == 5 else x).transpose(0, 1))
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2

    def write(tmp):
        with av.open(str(tmp), mode="w", format=container_format) as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18"}
            for arr in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")))
            container.mux(stream.encode())

    write_atomically(path, write)
