"""Example inputs found in installed packages at run time (nothing is copied into this repository): scikit-image's
bundled photographs and the videos and meshes that ship with Gradio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SKIMAGE_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
GRADIO_VIDEOS = ("world.mp4", "b.mp4")
GRADIO_MESHES = ("Bunny.obj", "Duck.glb", "Fox.gltf")


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _existing(folder: Path | None, names) -> list[str]:
    return [str(folder / n) for n in names if folder is not None and (folder / n).is_file()]


def bundled_examples() -> dict[str, list[str]]:
    """Paths of example images, videos and meshes that exist in this environment (lists may be empty)."""
    skimage, gradio = package_dir("skimage"), package_dir("gradio")
    assets = gradio / "media_assets" if gradio else None
    return {
        "images": _existing(skimage / "data" if skimage else None, SKIMAGE_IMAGES),
        "videos": _existing(assets / "videos" if assets else None, GRADIO_VIDEOS),
        "meshes": _existing(assets / "models3d" if assets else None, GRADIO_MESHES),
    }
