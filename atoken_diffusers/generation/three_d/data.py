"""Training data of image-to-3D: meshes pre-encoded into voxels, AToken latents and image-condition tokens.

For every mesh (``.obj``, ``.glb``, ``.gltf``, ``.ply``, ``.stl``, ``.off``) :func:`encode_3d_dataset` writes
``object-{i:05d}.safetensors`` holding

- ``coords``: (N, 3) uint8 occupied voxels of the 64^3 grid (AToken's 3D packing, ``pack_mesh``);
- ``latents``: (N, C) float32 AToken posterior means of those voxels (``encode_tokens``);
- ``cond``: (V, L, D) float32 AToken encoder tokens of V condition renders (ray-cast, white background, cameras
  ``sphere_cameras(V, offset=0.5)``, between the packing views);
- ``renders``: (V, 3, S, S) uint8 the condition renders themselves;

then ``manifest.json`` (written last). Each file is written to a temporary name and renamed; a rerun with the same
settings skips finished objects. :class:`VoxelLatentSet` reads the folder for :mod:`.train_image_to_3d`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ...utils.atomic import atomic_path, remove_stale_temps, write_atomically
from .sparse_structure import RESOLUTION, coords_to_grid

FORMAT = "atoken-3d-latents"
MANIFEST = "manifest.json"


def _object_name(i: int) -> str:
    return f"object-{i:05d}.safetensors"


@torch.no_grad()
def encode_3d_dataset(meshes, model, out, views: int = 8, image_size: int = 256, pack_views: int = 24,
                      pack_size: int = 256, background: float = 1.0, overwrite: bool = False,
                      log=print) -> dict:
    """Encode ``meshes`` (files, folders or globs) with the AToken folder ``model`` into ``out``; returns the
    manifest. ``image_size`` is the side of the condition renders (a multiple of 16)."""
    from ...models.autoencoder_atoken import AutoencoderAToken
    from ...three_d.camera import sphere_cameras
    from ...three_d.mesh import load_mesh
    from ...three_d.pipeline import pack_mesh
    from ...three_d.render_mesh import render_mesh
    from ...tokens.voxels import voxels_to_tokens
    from ...utils.media_sets import expand_paths
    from ..data.encode_dataset import model_fingerprint
    from .image_condition import image_tokens

    files = expand_paths([meshes] if isinstance(meshes, (str, os.PathLike)) else list(meshes), "meshes")
    model_dir, out = Path(model), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model {model_dir}: no config.json; pass a converted AToken folder.")
    if image_size < 16 or image_size % 16:
        raise ValueError(f"image_size {image_size} must be a positive multiple of 16.")
    if views < 1:
        raise ValueError(f"views must be >= 1; got {views}.")
    settings = {"files": [str(f) for f in files], "views": views, "image_size": image_size, "pack_views": pack_views,
                "pack_size": pack_size, "background": background, "model": model_fingerprint(model_dir)}
    plan = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    old = json.loads((out / "plan.json").read_text()).get("id") if (out / "plan.json").is_file() else None
    if old not in (None, plan) and not overwrite:
        raise FileExistsError(f"{out} holds objects encoded with other meshes or settings; pass a new folder or "
                              "overwrite=True.")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    for path in out.glob("object-*.safetensors") if old not in (None, plan) else []:
        path.unlink()
    write_atomically(out / "plan.json", json.dumps({**settings, "id": plan}, indent=1))
    vae = AutoencoderAToken.from_pretrained(model_dir, local_files_only=True).eval()
    cameras = sphere_cameras(views, size=image_size, offset=0.5)
    for i, path in enumerate(files):
        final = out / _object_name(i)
        if final.is_file():
            with safe_open(final, framework="pt") as f:
                if (f.metadata() or {}).get("plan") == plan:
                    continue
        mesh = load_mesh(path)
        coords, feats = pack_mesh(mesh, pack_views, pack_size)
        latents = vae.encode_tokens(voxels_to_tokens(coords, feats)).latent_dist.mean.float()
        renders = render_mesh(mesh, cameras, background=background).rgb.clamp(0, 1)
        tensors = {"coords": coords.to(torch.uint8), "latents": latents.cpu(), "cond": image_tokens(vae, renders).cpu(),
                   "renders": (renders * 255).round().to(torch.uint8)}
        with atomic_path(final) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"plan": plan, "mesh": str(path)})
        log(f"{path.name}: {coords.shape[0]} voxels")
    manifest = {"format": FORMAT, "version": 1, "plan": plan, "objects": [str(f) for f in files],
                "files": [_object_name(i) for i in range(len(files))], "views": views, "image_size": image_size,
                "background": background, "latent_channels": vae.config.latent_channels,
                "cond_dim": vae.config.encoder_dim, "cond_tokens": (image_size // 16) ** 2,
                "model": {"path": str(model_dir.resolve())}}
    write_atomically(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


class VoxelLatentSet:
    """The objects of an :func:`encode_3d_dataset` folder, in memory.

    ``batch(index)`` gives ``coords`` (N, 4) (batch, x, y, z), ``latents`` (N, C), ``cond`` (B, V, L, D) and
    ``occupancy`` (B, 1, 64, 64, 64) of the objects ``index``.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {MANIFEST}; create it with encode_3d_dataset (or run it again "
                                    "to finish an interrupted encoding).")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an image-to-3D dataset manifest (format {self.manifest.get('format')!r}).")
        self.objects = [load_file(self.folder / name) for name in self.manifest["files"]]
        if not self.objects:
            raise ValueError(f"{folder} holds no objects.")

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def model(self) -> dict:
        return dict(self.manifest["model"])

    @property
    def latent_channels(self) -> int:
        return self.manifest["latent_channels"]

    @property
    def cond_dim(self) -> int:
        return self.manifest["cond_dim"]

    def iter_latents(self):
        """(N, C) voxel latents object after object, as (1, C, N) for :class:`RunningMoments`."""
        for obj in self.objects:
            yield obj["latents"].t()[None]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        objs = [self.objects[i] for i in index]
        coords = torch.cat([torch.cat([torch.full((o["coords"].shape[0], 1), b), o["coords"].long()], 1)
                            for b, o in enumerate(objs)])
        return {"coords": coords, "latents": torch.cat([o["latents"] for o in objs]),
                "cond": torch.stack([o["cond"] for o in objs]),
                "occupancy": coords_to_grid(coords, len(objs), RESOLUTION)}
