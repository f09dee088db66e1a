"""Reading and writing images and videos as tensors in [-1, 1] (Pillow for images, PyAV for video)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import write_atomically

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


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
    """(1, 3, H, W) in [-1, 1]."""
    with Image.open(path) as im:
        return to_tensor(np.asarray(im.convert("RGB")))[None]


def save_image(x: torch.Tensor, path: str | os.PathLike) -> None:
    """Save a (3, H, W) or (1, 3, H, W) tensor in [-1, 1]; written to a temporary file, then renamed."""
    arr = to_uint8(x[0] if x.ndim == 4 else x)
    image_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    write_atomically(path, lambda tmp: Image.fromarray(arr).save(tmp, format=image_format))


def load_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """(1, 3, T, H, W) in [-1, 1] and the frame rate."""
    import av

    frames = []
    with av.open(str(path)) as container:
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
    by one pixel)."""
    import av

    frames = to_uint8((x[0] if x.ndim == 5 else x).transpose(0, 1))
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2

    def write(tmp):
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18"}
            for arr in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")))
            container.mux(stream.encode())

    write_atomically(path, write)
