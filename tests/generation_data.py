"""Shared data of the generation tests: a tiny labelled image folder cut from real scikit-image photographs, a tiny
FSQ tokenizer, and the folder's latent shards.

The tokenizer is the converted parity model with FSQ (2 codebooks x 4096, 12 latent channels) whose bottleneck rows of
the posterior mean are multiplied by 8: its random tiny weights give latents of std ~0.16, which FSQ rounds to a single
code almost everywhere; scaled, the codes spread over all levels (74 distinct tokens on this data) while the
normalised continuous latents are unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

CLASSES = {"cat": "chelsea", "space": "hubble_deep_field"}  # class sub-folder -> scikit-image photograph
SIDE, CROP, STRIDE = 80, 48, 16  # photo resized to 80 x 80, 3 x 3 crops of 48 x 48 -> latent grids of 3 x 3
_CACHE: dict = {}


def build_class_folders(root: Path) -> Path:
    """root/cat/00.png ... root/space/08.png: 9 crops per class."""
    from PIL import Image
    from skimage import data, transform

    for name, photo in CLASSES.items():
        img = transform.resize(getattr(data, photo)()[..., :3], (SIDE, SIDE), anti_aliasing=True)
        (root / name).mkdir(parents=True, exist_ok=True)
        offsets = range(0, SIDE - CROP + 1, STRIDE)
        for k, (y, x) in enumerate((y, x) for y in offsets for x in offsets):
            crop = (img[y:y + CROP, x:x + CROP] * 255).round().astype(np.uint8)
            Image.fromarray(crop).save(root / name / f"{k:02d}.png")
    return root


def make_tokenizer(fsq_dir: Path, out: Path) -> Path:
    from atoken_diffusers import AutoencoderAToken

    vae = AutoencoderAToken.from_pretrained(fsq_dir)
    with torch.no_grad():
        vae.to_moments.weight[: vae.config.latent_channels] *= 8
    vae.save_pretrained(out)
    return out


@contextmanager
def threads(n: int):
    """Tiny models run fastest on one thread (and the test machine's two cores are shared)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def gen_data(converted_dirs, tmp_path_factory) -> SimpleNamespace:
    """images: the class folders; vae: the tokenizer folder; shards: the folder encoded in one process
    (resolution 48, 2 samples per shard)."""
    if "data" not in _CACHE:  # the fixture is imported by several modules: build once
        from atoken_diffusers.generation.data.encode_dataset import encode_dataset

        root = tmp_path_factory.mktemp("generation")
        images = build_class_folders(root / "images")
        vae = make_tokenizer(converted_dirs["fsq"], root / "vae")
        with threads(1):
            summary = encode_dataset(images, vae, root / "shards", resolution=CROP, shard_size=2, batch_size=4)
        _CACHE["data"] = SimpleNamespace(images=images, vae=vae, shards=root / "shards", root=root, summary=summary)
    return _CACHE["data"]


@pytest.fixture()
def one_thread():
    with threads(1):
        yield
