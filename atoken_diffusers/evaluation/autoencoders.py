"""The rows of an evaluation: AToken folders, diffusers peers and the PCA baseline behind one interface.

Every row reconstructs the same input tensor (images (1, 3, H, W), clips (1, 3, T, H, W), in [-1, 1]) and returns a
tensor of the same shape, clamped to [-1, 1]. A row is described by a :class:`RowSpec` (cheap, picklable, hashed into
the resume key) and loaded one at a time, so only one model is in memory.

- AToken (``AutoencoderAToken`` folder): the posterior mean decoded; a model with an FSQ quantizer (So/D) goes through
  its discrete tokens (``tokenize`` -> ``detokenize`` -> ``decode``), as its users would run it.
- diffusers peers (any folder whose ``config.json`` names a diffusers autoencoder class: ``AutoencoderKL``,
  ``AutoencoderKLWan``, ``AutoencoderDC``, ...): ``encode`` -> the distribution's mode (or the deterministic latent)
  -> ``decode``, tiling off, the same dtype as the other rows; the scaling factor is left out since it cancels in a
  round trip. Image autoencoders see a clip as a batch of frames; video ones (a ``temperal_downsample`` config, i.e.
  Wan) see it whole, its frame count padded to 1 + 4k by repeating the last frame and cut back after decoding.
- PCA (``weights.baseline.PCACodec``): per 16 x 16 patch (4 x 16 x 16 for clips), the same number of floats as the
  model row it stands beside.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..weights.baseline import PCACodec

PATCH, FRAMES_PER_TOKEN = 16, 4  # the PCA baseline's patch: one AToken token


@dataclass(frozen=True)
class Compression:
    """Spatial x temporal downsampling, latent channels, and bits per token for discrete (FSQ) latents."""

    spatial: int
    temporal: int
    channels: int
    bits_per_token: float | None = None

    def floats_per_patch(self, kind: str) -> int:
        """Latent floats per 16 x 16 image patch, or per 4 x 16 x 16 clip patch: the PCA baseline's size."""
        frames = FRAMES_PER_TOKEN / self.temporal if kind == "videos" else 1
        return max(1, round(self.channels * (PATCH / self.spatial) ** 2 * frames))

    def describe(self) -> str:
        text = f"{self.spatial}x{self.spatial}x{self.temporal}, {self.channels} ch"
        return text + (f", {self.bits_per_token:g} bits/token" if self.bits_per_token else "")


def _folder_fingerprint(folder: Path) -> str:
    """Config and weight files' names, sizes and modification times: a retrained model is another row."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".safetensors", ".bin"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


@dataclass(frozen=True)
class RowSpec:
    """One row: ``family`` "atoken", "diffusers" or "pca"; ``path`` the model folder or PCA file (None: fit);
    ``components`` the PCA size, ``kind`` the media it codes (images or videos) and ``fit_set`` what a PCA without a
    file is fitted on."""

    family: str
    name: str
    path: str | None = None
    components: int | None = None
    kind: str | None = None
    fit_set: tuple[str, ...] = ()

    def key(self) -> str:
        """A folder name for this row's results: its name and a hash of what it is."""
        source = _folder_fingerprint(Path(self.path)) if self.family != "pca" and self.path else self.path
        text = json.dumps([self.family, self.name, str(self.path), self.components, self.kind, list(self.fit_set),
                           source])
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def model_spec(path: str, peer: bool = False) -> RowSpec:
    """The spec of a ``--model`` (AToken) or ``--peer`` (diffusers) folder.

    Raises:
        FileNotFoundError / ValueError naming the flag and folder when it is not such a folder.
    """
    flag = "--peer" if peer else "--model"
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{flag} {path}: no config.json; pass a diffusers model folder.")
    class_name = json.loads(config_file.read_text()).get("_class_name", "")
    if not peer and class_name != "AutoencoderAToken":
        raise ValueError(f"--model {path} is a {class_name or 'non-diffusers'} folder; pass AToken folders to --model "
                         f"and other autoencoders to --peer.")
    if peer:
        import diffusers

        cls = getattr(diffusers, class_name, None)
        if cls is None or not (hasattr(cls, "encode") and hasattr(cls, "decode")):
            raise ValueError(f"--peer {path}: {class_name or 'no _class_name'} is not a diffusers autoencoder class.")
    return RowSpec("atoken" if class_name == "AutoencoderAToken" else "diffusers", Path(path).name, str(path))


class Row:
    """A loaded row: ``reconstruct(x)`` and its :class:`Compression`; ``kinds`` it can score."""

    kinds = ("images", "videos")

    def __init__(self, spec: RowSpec, compression: Compression):
        self.spec, self.compression = spec, compression

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@torch.no_grad()
def reconstruct_atoken(model, x: torch.Tensor, discrete: bool = False) -> torch.Tensor:
    """An AToken round trip of ``x`` (images or clips in [-1, 1]) on the model's device and dtype, clamped to [-1, 1]:
    through the FSQ tokens when ``discrete`` (tokenize -> detokenize -> decode, cut back to ``x``'s size), else the
    posterior mean decoded."""
    x = x.to(model.device, model.dtype)
    if discrete:
        rec = model.decode(model.detokenize(model.tokenize(x))).sample
        rec = rec[..., : x.shape[-2], : x.shape[-1]]
        rec = rec[:, :, : x.shape[2]] if x.ndim == 5 else rec
    else:
        rec = model(x).sample
    return rec.clamp(-1, 1)


class ATokenRow(Row):
    kinds = ("images", "videos", "meshes")

    def __init__(self, spec: RowSpec, model):
        fsq = model.quantizer
        bits = fsq.num_codebooks * math.log2(fsq.codebook_size) if fsq is not None else None
        super().__init__(spec, Compression(model.spatial_compression_ratio, model.temporal_compression_ratio,
                                           model.config.latent_channels, bits))
        self.model = model

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruct_atoken(self.model, x, discrete=self.model.quantizer is not None).float().cpu()


class DiffusersRow(Row):
    def __init__(self, spec: RowSpec, vae):
        config = vae.config
        spatial = getattr(vae, "spatial_compression_ratio", None) or 2 ** (len(config.get("block_out_channels", [0])) - 1)
        self.is_video = "temperal_downsample" in config
        temporal = getattr(vae, "temporal_compression_ratio", None) or (2 ** sum(config["temperal_downsample"])
                                                                        if self.is_video else 1)
        channels = config.get("latent_channels") or config.get("z_dim")
        super().__init__(spec, Compression(int(spatial), int(temporal), int(channels)))
        self.vae = vae

    def _round_trip(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.vae.encode(x)
        z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latent
        return self.vae.decode(z).sample

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.vae.device, self.vae.dtype)
        if self.is_video:
            clip = x if x.ndim == 5 else x[:, :, None]
            t = clip.shape[2]
            step = self.compression.temporal
            padded = 1 + step * math.ceil((t - 1) / step)  # causal video VAEs take 1 + k * step frames
            clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, padded - t, -1, -1)], 2)
            rec = self._round_trip(clip)[:, :, :t]
            rec = rec if x.ndim == 5 else rec[:, :, 0]
        elif x.ndim == 5:
            frames = x.transpose(1, 2).flatten(0, 1)
            rec = self._round_trip(frames).unflatten(0, x.shape[:1] + x.shape[2:3]).transpose(1, 2)
        else:
            rec = self._round_trip(x)
        return rec[..., : x.shape[-2], : x.shape[-1]].float().clamp(-1, 1).cpu()


class PCARow(Row):
    def __init__(self, spec: RowSpec, codec: PCACodec, kind: str):
        frames = FRAMES_PER_TOKEN if kind == "videos" else 1
        super().__init__(spec, Compression(PATCH, frames, codec.basis.shape[1]))
        self.kinds, self.codec = (kind,), codec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.codec.reconstruct(x.float().cpu())


def pca_spec(components: int, kind: str, fit_set: tuple[str, ...]) -> RowSpec:
    """PCA with ``components`` floats per patch for ``kind``: the shipped 48-float codec when the size matches, else
    one fitted on ``fit_set`` (see :func:`load_row`)."""
    from ..weights.held_out import IMAGE_PCA, VIDEO_PCA

    shipped = {"images": IMAGE_PCA, "videos": VIDEO_PCA}[kind]
    path = str(shipped) if components == PCACodec.load(shipped).basis.shape[1] else None
    return RowSpec("pca", f"PCA-{components}", path, components, kind, () if path else tuple(fit_set))


def _opens(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.convert("RGB")
        return True
    except (OSError, UnidentifiedImageError):
        return False


def fit_pca(components: int, kind: str, fit_set: tuple[str, ...]) -> PCACodec:
    """A PCA codec of ``components`` per patch fitted on ``fit_set`` (the held-out photographs left out), as the
    shipped ones were fitted (``weights.build``): seeded random views, so every process fits the same codec. Images
    Pillow cannot open as one RGB picture (scikit-image ships a multi-page TIFF) are left out of the fit."""
    from ..utils.media_sets import expand_paths
    from ..weights.baseline import sample_image_patches, sample_video_patches
    from ..weights.held_out import HELD_OUT_PATTERNS, HELD_OUT_VIDEO

    exclude = HELD_OUT_PATTERNS + [HELD_OUT_VIDEO[1]]
    files = expand_paths(list(fit_set), kind, exclude)
    if kind == "images":
        return PCACodec.fit(sample_image_patches([f for f in files if _opens(f)]), components)
    return PCACodec.fit(sample_video_patches(files), components, frames=FRAMES_PER_TOKEN)


def load_row(spec: RowSpec, kind: str, dtype: torch.dtype, device: torch.device) -> Row:
    """Load the model (or codec) of ``spec`` for scoring ``kind`` items."""
    if spec.family == "pca":
        codec = PCACodec.load(spec.path) if spec.path else fit_pca(spec.components, kind, spec.fit_set)
        return PCARow(spec, codec, kind)
    if spec.family == "atoken":
        from ..models.loading import DTYPES, load_autoencoder

        name = next(k for k, v in DTYPES.items() if v == dtype)
        return ATokenRow(spec, load_autoencoder(spec.path, dtype=name, device=str(device)))
    import diffusers

    cls = getattr(diffusers, json.loads((Path(spec.path) / "config.json").read_text())["_class_name"])
    vae = cls.from_pretrained(spec.path, torch_dtype=dtype, local_files_only=True).to(device).eval()
    if hasattr(vae, "disable_tiling"):
        vae.disable_tiling()  # every row sees the whole input: tiles would change the numbers
    return DiffusersRow(spec, vae)
