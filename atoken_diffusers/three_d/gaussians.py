"""3D Gaussians: the data type decoded from AToken's 3D latents, and the two file formats splat viewers read.

* ``.ply``: the binary little-endian layout written by the original 3D Gaussian Splatting code (opacity as logit,
  scale as log, quaternion w x y z, colour as SH degree-0 coefficients). Gradio's ``Model3D`` and most web viewers
  read it.
* ``.splat``: antimatter15's compact 32-byte record (activated scale, RGBA and quaternion in uint8), sorted by
  descending ``volume * opacity`` so that progressive viewers draw the most important splats first.

Both formats are read and written with numpy structured arrays; writes are atomic (``utils.atomic``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import write_atomically

SH_C0 = 0.28209479177387814  # Y_0^0: displayed colour = 0.5 + SH_C0 * features_dc

_PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                   "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_PLY_REQUIRED = tuple(name for name in _PLY_PROPERTIES if name not in ("nx", "ny", "nz"))
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
              "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
              "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}
_WIDTHS = {"xyz": 3, "features_dc": 3, "scaling": 3, "rotation": 4, "opacity": 1}
_SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
# Opacities of exactly 0 or 1 (a float32 sigmoid saturates) have no finite logit; store them just inside (0, 1).
_LOGIT_EPS = 1e-7


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] -> SH degree-0 coefficients (inverse of ``Gaussians.rgb`` inside the displayable range)."""
    return (rgb - 0.5) / SH_C0


@dataclass
class Gaussians:
    """N 3D Gaussians with activated parameters, all on one device and of one floating dtype.

    Attributes:
        xyz: (N, 3) centres in world coordinates.
        features_dc: (N, 3) SH degree-0 colour coefficients (see ``rgb``).
        scaling: (N, 3) standard deviations along the local axes, world units, > 0.
        rotation: (N, 4) quaternions (w, x, y, z); unit norm expected, any non-zero norm accepted (normalised on use).
        opacity: (N, 1) opacity in [0, 1].
    """

    xyz: torch.Tensor
    features_dc: torch.Tensor
    scaling: torch.Tensor
    rotation: torch.Tensor
    opacity: torch.Tensor

    def __post_init__(self) -> None:
        n = self.xyz.shape[0] if isinstance(self.xyz, torch.Tensor) and self.xyz.ndim == 2 else None
        for name, width in _WIDTHS.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                got = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
                raise TypeError(f"Gaussians.{name} must be a floating-point tensor, got {got}")
            if value.ndim != 2 or value.shape[1] != width or value.shape[0] != n:
                raise ValueError(f"Gaussians.{name} must have shape (N, {width}) with N = len(xyz), got "
                                 f"{tuple(value.shape)} (xyz: {tuple(self.xyz.shape)})")
            if value.device != self.xyz.device or value.dtype != self.xyz.dtype:
                raise ValueError(f"Gaussians.{name} is {value.dtype} on {value.device}, but xyz is "
                                 f"{self.xyz.dtype} on {self.xyz.device}")
            if not torch.isfinite(value).all():
                raise ValueError(f"Gaussians.{name} contains NaN or infinite values")
        if (self.scaling <= 0).any():
            raise ValueError(f"Gaussians.scaling must be > 0 (activated std-devs), min is "
                             f"{self.scaling.min().item():g}")
        if ((self.opacity < 0) | (self.opacity > 1)).any():
            raise ValueError(f"Gaussians.opacity must lie in [0, 1] (activated), range is "
                             f"[{self.opacity.min().item():g}, {self.opacity.max().item():g}]")
        if (self.rotation.norm(dim=1) < 1e-12).any():
            raise ValueError("Gaussians.rotation contains zero-norm quaternions")

    def __len__(self) -> int:
        return self.xyz.shape[0]

    @property
    def rgb(self) -> torch.Tensor:
        """(N, 3) displayed colour in [0, 1]."""
        return (0.5 + SH_C0 * self.features_dc).clamp(0.0, 1.0)

    def covariance(self) -> torch.Tensor:
        """(N, 3, 3) world-space covariance R S S^T R^T (differentiable)."""
        m = quaternion_to_matrix(self.rotation) * self.scaling[:, None, :]  # scales the columns: R S
        return m @ m.transpose(1, 2)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians:
        """Copy on ``device`` and/or with floating ``dtype``."""
        return Gaussians(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)})

    def select(self, index: torch.Tensor | slice) -> Gaussians:
        """Subset by boolean mask (N,), integer indices or slice."""
        return Gaussians(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def cat(cls, items: Sequence[Gaussians]) -> Gaussians:
        """Concatenate several sets (same device and dtype) into one."""
        if not items:
            raise ValueError("Gaussians.cat needs at least one set")
        return cls(**{f.name: torch.cat([getattr(g, f.name) for g in items]) for f in fields(cls)})

    # ----------------------------------------------------------------------------------------------- .ply files

    def save_ply(self, path: str | os.PathLike) -> Path:
        """Write the standard 3DGS binary little-endian PLY (17 float32 properties, see module docstring)."""
        n = len(self)
        data = np.zeros(n, dtype=[(name, "<f4") for name in _PLY_PROPERTIES])  # normals stay 0
        xyz, f_dc, scale, rot, opacity = (t.detach().cpu().double().numpy() for t in
                                          (self.xyz, self.features_dc, self.scaling, self.rotation, self.opacity))
        opacity = np.clip(opacity[:, 0], _LOGIT_EPS, 1 - _LOGIT_EPS)
        columns = {"opacity": np.log(opacity / (1 - opacity))}
        for i, axis in enumerate("xyz"):
            columns[axis] = xyz[:, i]
        for i in range(3):
            columns[f"f_dc_{i}"], columns[f"scale_{i}"] = f_dc[:, i], np.log(scale[:, i])
        for i in range(4):
            columns[f"rot_{i}"] = rot[:, i]
        for name, column in columns.items():
            data[name] = column
        header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {n}",
                            *(f"property float {name}" for name in _PLY_PROPERTIES), "end_header"]) + "\n"
        return write_atomically(path, header.encode("ascii") + data.tobytes())

    @classmethod
    def load_ply(cls, path: str | os.PathLike) -> Gaussians:
        """Read a 3DGS PLY (float32 tensors on CPU). Extra vertex properties (normals, higher-order SH ``f_rest_*``)
        are ignored; ASCII or big-endian files, list properties or elements before ``vertex`` raise ``ValueError``."""
        raw = Path(path).read_bytes()
        dtype, count, offset = _parse_ply_header(raw, path)
        if len(raw) < offset + count * dtype.itemsize:
            raise ValueError(f"{path}: truncated, expected {count} vertices of {dtype.itemsize} bytes")
        v = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)

        def stack(*names: str) -> np.ndarray:
            return np.stack([v[name].astype(np.float64) for name in names], axis=1)

        # 3DGS training stores its raw, unnormalised quaternion parameters.
        rotation = _normalise_quaternions(stack("rot_0", "rot_1", "rot_2", "rot_3"))
        return _from_numpy(xyz=stack("x", "y", "z"), features_dc=stack("f_dc_0", "f_dc_1", "f_dc_2"),
                           scaling=np.exp(stack("scale_0", "scale_1", "scale_2")), rotation=rotation,
                           opacity=1.0 / (1.0 + np.exp(-stack("opacity"))))

    # --------------------------------------------------------------------------------------------- .splat files

    def save_splat(self, path: str | os.PathLike) -> Path:
        """Write antimatter15's ``.splat`` (32 bytes per Gaussian), most important (volume * opacity) first."""
        xyz, scale, rot, opacity = (t.detach().cpu().double().numpy() for t in
                                    (self.xyz, self.scaling, self.rotation, self.opacity))
        rgb = self.rgb.detach().cpu().double().numpy()
        order = np.argsort(-np.prod(scale, axis=1) * opacity[:, 0], kind="stable")
        rot = rot / np.linalg.norm(rot, axis=1, keepdims=True)
        data = np.empty(len(self), dtype=_SPLAT_DTYPE)
        data["position"], data["scale"] = xyz[order], scale[order]
        data["rgba"] = _to_uint8(np.concatenate([rgb, opacity], axis=1)[order] * 255.0)
        data["rotation"] = _to_uint8(rot[order] * 128.0 + 128.0)
        return write_atomically(path, data.tobytes())

    @classmethod
    def load_splat(cls, path: str | os.PathLike) -> Gaussians:
        """Read a ``.splat`` file (float32 tensors on CPU, in file order). Colours and opacity come back quantised
        to 1/255, quaternion components to 1/128."""
        raw = Path(path).read_bytes()
        if len(raw) % _SPLAT_DTYPE.itemsize:
            raise ValueError(f"{path}: size {len(raw)} is not a multiple of {_SPLAT_DTYPE.itemsize} bytes")
        v = np.frombuffer(raw, dtype=_SPLAT_DTYPE)
        rgba = v["rgba"].astype(np.float64) / 255.0
        rotation = _normalise_quaternions((v["rotation"].astype(np.float64) - 128.0) / 128.0)
        return _from_numpy(xyz=v["position"], features_dc=(rgba[:, :3] - 0.5) / SH_C0, scaling=v["scale"],
                           rotation=rotation, opacity=rgba[:, 3:])


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), any non-zero norm -> (N, 3, 3) rotation matrices (differentiable)."""
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(-1, 3, 3)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (w, x, y, z), the inverse of
    :func:`quaternion_to_matrix` (up to sign). Each row is built from its largest of 4 w/x/y/z candidates, which
    keeps it accurate for any rotation (the trace formula alone loses w near 180 degrees)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.flatten(1).unbind(1)
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], 1)
    candidates = torch.stack([
        torch.stack([diag[:, 0], m21 - m12, m02 - m20, m10 - m01], 1),
        torch.stack([m21 - m12, diag[:, 1], m01 + m10, m02 + m20], 1),
        torch.stack([m02 - m20, m01 + m10, diag[:, 2], m12 + m21], 1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, diag[:, 3]], 1)], 1)  # (N, 4 candidates, 4)
    q = torch.gather(candidates, 1, diag.argmax(1)[:, None, None].expand(-1, 1, 4))[:, 0]
    return q / q.norm(dim=1, keepdim=True)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (N, 4) quaternions (w, x, y, z): the rotation ``b`` followed by ``a``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def _parse_ply_header(raw: bytes, path: str | os.PathLike) -> tuple[np.dtype, int, int]:
    """-> (vertex record dtype, vertex count, byte offset of the vertex data)."""
    end = raw.find(b"end_header")
    newline = raw.find(b"\n", end)
    if not raw.startswith(b"ply") or end < 0 or newline < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    lines = [line.split() for line in raw[:end].decode("ascii", errors="replace").splitlines()]
    lines = [line for line in lines if line and line[0] not in ("comment", "obj_info")]
    if ["format", "binary_little_endian", "1.0"] not in lines:
        raise ValueError(f"{path}: only 'format binary_little_endian 1.0' PLY files are supported")
    elements = [i for i, line in enumerate(lines) if line[0] == "element"]
    if not elements or lines[elements[0]][1] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex'")
    stop = elements[1] if len(elements) > 1 else len(lines)
    props = lines[elements[0] + 1:stop]
    if any(p[0] != "property" or len(p) != 3 or p[1] not in _PLY_TYPES for p in props):
        raise ValueError(f"{path}: vertex properties must be scalar numeric types (no lists)")
    names = [p[2] for p in props]
    missing = [name for name in _PLY_REQUIRED if name not in names]
    if missing:
        raise ValueError(f"{path}: not a 3D Gaussian Splatting PLY, missing vertex properties {missing}")
    dtype = np.dtype([(p[2], _PLY_TYPES[p[1]]) for p in props])
    return dtype, int(lines[elements[0]][2]), newline + 1


def _normalise_quaternions(q: np.ndarray) -> np.ndarray:
    """(N, 4) -> unit quaternions; all-zero rows (degenerate files) become the identity rather than NaN."""
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))


def _from_numpy(**arrays: np.ndarray) -> Gaussians:
    return Gaussians(**{k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in arrays.items()})


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clamp to [0, 255]: rounding halves the error of the truncation the reference converter uses."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
