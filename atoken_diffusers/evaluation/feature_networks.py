"""The pretrained networks behind LPIPS, rFID and rFVD, loaded from local files only (nothing downloads).

=============  =================================================================  ==================================
name           file                                                               used for
=============  =================================================================  ==================================
inception      ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid /             rFID (2048 pool3 features)
               torch-fidelity; torchvision ``Inception3`` keys, 1008-way ``fc``)
i3d            ``rgb_imagenet.pt`` (the PyTorch port of the Kinetics-400 I3D)      rFVD (400 logits)
lpips_vgg      torchvision ``vgg16`` weights (``features.N.weight``)               LPIPS backbone
lpips_heads    the LPIPS project's ``vgg.pth`` (``linN.model.1.weight``)           LPIPS 1x1 heads
=============  =================================================================  ==================================

Files are ``.safetensors`` or PyTorch files read with ``torch.load(weights_only=True)``. They are named by command-line
flags or by a JSON config ``{"inception": PATH, "i3d": PATH, "lpips_vgg": PATH, "lpips_heads": PATH}`` (relative paths
from the config's folder). A network that is not given leaves its column "not computed"; a file that is given but
missing or of the wrong shape is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..losses.lpips import LPIPS
from ..losses.vgg import read_weights
from .i3d import I3D
from .inception import FIDInceptionV3

NETWORK_NAMES = ("inception", "i3d", "lpips_vgg", "lpips_heads")
# What each missing network leaves uncomputed, for the one line the command prints.
COLUMNS = {"inception": "rFID", "i3d": "rFVD", "lpips": "LPIPS"}


def load_strict(model: nn.Module, path: str | os.PathLike, what: str) -> nn.Module:
    """Load ``path`` into ``model`` with strict key and shape checks; ValueError naming the file and the first
    differences otherwise. Batch-norm step counters (``num_batches_tracked``) may be absent, as in older files."""
    state = read_weights(path)
    counters = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    state = {**counters, **state}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: not {what} weights (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shape {wrong[:3]}); see `atoken evaluate --help` for the expected files.")
    model.load_state_dict(state, strict=True)
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise ValueError(f"{path}: {what} weights contain NaN or Inf; the file is damaged.")
    return model.eval()


def _file_fingerprint(path: str | os.PathLike) -> str:
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _module_fingerprint(module: nn.Module) -> str:
    """What identifies in-memory weights (tests pass random networks): a hash of every parameter's bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return f"{type(module).__name__}:{digest.hexdigest()[:16]}"


@dataclass
class FeatureNetworks:
    """The feature networks of one evaluation; None where not given (that column is "not computed").

    Build with :meth:`from_files`, or pass modules directly (tests use random-weight networks of these classes).
    """

    inception: FIDInceptionV3 | None = None
    i3d: I3D | None = None
    lpips: LPIPS | None = None
    sources: dict = field(default_factory=dict)  # name -> file it came from (for the report)

    @classmethod
    def from_files(cls, inception=None, i3d=None, lpips_vgg=None, lpips_heads=None, config=None) -> FeatureNetworks:
        """Load the named files (each may be None); ``config`` is a JSON file naming any of them (flags win).

        Raises:
            FileNotFoundError naming the flag and file when one is given but absent; ValueError when a file is not
            the expected network, or only one of the two LPIPS files is given.
        """
        given = dict(zip(NETWORK_NAMES, (inception, i3d, lpips_vgg, lpips_heads)))
        if config is not None:
            folder = Path(config).parent
            try:
                listed = json.loads(Path(config).read_text())
            except FileNotFoundError:
                raise FileNotFoundError(f"--feature-networks {config}: no such file.") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"--feature-networks {config}: not JSON ({err}).") from None
            unknown = sorted(set(listed) - set(NETWORK_NAMES)) if isinstance(listed, dict) else ["(not an object)"]
            if unknown:
                raise ValueError(f"--feature-networks {config}: unknown keys {unknown}; use {list(NETWORK_NAMES)}.")
            for name, path in listed.items():
                given[name] = given[name] or (path if Path(path).is_absolute() else folder / path)
        for name, path in given.items():
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"--{name.replace('_', '-')} {path}: no such file (the {name} weights; see "
                                        f"`atoken evaluate --help` for the expected files).")
        if (given["lpips_vgg"] is None) != (given["lpips_heads"] is None):
            lacking = "--lpips-heads" if given["lpips_heads"] is None else "--lpips-vgg"
            raise ValueError(f"LPIPS needs both the VGG16 backbone and the LPIPS heads; also pass {lacking} FILE.")
        nets = cls(sources={k: str(v) for k, v in given.items() if v is not None})
        if given["inception"]:
            nets.inception = load_strict(FIDInceptionV3(), given["inception"], "FID Inception-v3 (pt_inception-2015-12-05)")
        if given["i3d"]:
            nets.i3d = load_strict(I3D(), given["i3d"], "I3D Kinetics-400 (pytorch-i3d rgb)")
        if given["lpips_vgg"]:
            nets.lpips = LPIPS(given["lpips_vgg"], given["lpips_heads"]).eval()
        return nets

    def to(self, device) -> FeatureNetworks:
        for name in ("inception", "i3d", "lpips"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def missing(self, kinds=("images", "videos", "meshes")) -> list[str]:
        """The columns these networks leave uncomputed for media ``kinds``, e.g. ``["rFVD (--i3d)"]``."""
        flags = {"inception": "--inception", "i3d": "--i3d", "lpips": "--lpips-vgg and --lpips-heads"}
        needed = {"lpips": True, "inception": "images" in kinds, "i3d": "videos" in kinds}
        return [f"{COLUMNS[n]} ({flags[n]})" for n in ("lpips", "inception", "i3d")
                if needed[n] and getattr(self, n) is None]

    def fingerprint(self) -> dict:
        """What identifies the networks' weights (part of the resume key: other weights, other features)."""
        out = {}
        for name in ("inception", "i3d", "lpips"):
            module = getattr(self, name)
            if module is None:
                continue
            files = [self.sources[k] for k in NETWORK_NAMES if k.startswith(name) and k in self.sources]
            out[name] = [_file_fingerprint(f) for f in files] if files else _module_fingerprint(module)
        return out
