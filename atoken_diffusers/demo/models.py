"""The models behind the demo: AToken autoencoders chosen in the page (loaded on first use, the last few kept), an
optional Gaussian decoder for 3D and an optional SigLIP text tower for zero-shot labels."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..weights import default_gs_decoder_dir, default_model_dir
from .inputs import DemoInputError

NO_MODEL = (
    "**No AToken model loaded.** Start the demo with `atoken demo --model DIR`, where DIR is a converted folder "
    "(`atoken convert --checkpoint atoken-soc.pt --config atoken-soc.yaml --output DIR`), or type such a folder's "
    "path in the model box above."
)


class ModelStore:
    """Args:
        models: converted autoencoder folders offered in the model selector (the embedded default comes first when
            the package ships one).
        gs_decoder: converted Gaussian decoder folder (3D tab), or None.
        text_model: local SigLIP/SigLIP2 text model folder (Understanding tab), or None.
        allow_paths: accept folders typed into the selector that were not listed (off for shared demos).
        keep: how many autoencoders stay loaded.
    """

    def __init__(self, models=(), gs_decoder=None, text_model=None, dtype: str = "fp32", device: str | None = None,
                 allow_paths: bool = True, keep: int = 2):
        embedded = default_model_dir()
        self.embedded = str(embedded) if embedded is not None else None
        discrete = default_model_dir(discrete=True)
        self.embedded_discrete = str(discrete) if discrete is not None else None
        listed = [p for p in (self.embedded, self.embedded_discrete) if p] + [str(Path(m).expanduser()) for m in models]
        self.listed = list(dict.fromkeys(listed))
        gs_decoder = gs_decoder or default_gs_decoder_dir()
        self.gs_decoder_path = str(gs_decoder) if gs_decoder else None
        self.text_model_path = str(text_model) if text_model else None
        self.dtype, self.device, self.allow_paths, self.keep = dtype, device, allow_paths, keep
        self._models: OrderedDict[str, object] = OrderedDict()
        self._extras: dict[str, object] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        """(label, folder) pairs for the selector; the embedded models say what they are, e.g.
        "atoken-small-d (embedded, FSQ tokens)", other folders show their path."""
        names = {self.embedded: "embedded, continuous", self.embedded_discrete: "embedded, FSQ tokens"}
        return [(f"{Path(path).name} ({names[path]})" if path in names else path, path) for path in self.listed]

    @property
    def default(self) -> str | None:
        return self.listed[0] if self.listed else None

    def autoencoder(self, name: str | None):
        """The AToken model for a selector value (loaded once, kept among the last ``keep`` used)."""
        if not name or not str(name).strip():
            raise DemoInputError("No AToken model selected. " + NO_MODEL.replace("**No AToken model loaded.** ", ""))
        key = str(Path(str(name).strip()).expanduser())
        if key not in self.listed and not self.allow_paths:
            raise DemoInputError(f"{name!r} is not one of this demo's models; choose one from the list.")
        if Path(key).is_file():
            raise DemoInputError(f"{Path(key).name!r} is a checkpoint file; the demo loads converted folders: run "
                                 "`atoken convert --checkpoint FILE.pt --config FILE.yaml --output DIR` first.")
        with self._lock:
            if key not in self._models:
                from ..models.loading import load_autoencoder

                try:
                    self._models[key] = load_autoencoder(key, dtype=self.dtype, device=self.device)
                except (FileNotFoundError, ValueError) as err:  # load_autoencoder's messages are written for users
                    raise DemoInputError(f"Model {err}") from None
                except (OSError, KeyError) as err:
                    raise DemoInputError(f"Model {key!r} could not be loaded: {err}") from None
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return self._models[key]

    def _extra(self, kind: str, load):
        with self._lock:
            if kind not in self._extras:
                self._extras[kind] = load()
            return self._extras[kind]

    def gaussian_decoder(self, device):
        """The Gaussian decoder on ``device``, or None when the demo has none."""
        if not self.gs_decoder_path:
            return None

        def load():
            from ..models.loading import DTYPES
            from ..three_d.gaussian_decoder import ATokenGaussianDecoder

            return ATokenGaussianDecoder.from_pretrained(self.gs_decoder_path, torch_dtype=DTYPES[self.dtype]).eval()

        return self._extra("gs", load).to(device)

    def text_tower(self, device):
        """The text tower on ``device``, or None when the demo has none."""
        if not self.text_model_path:
            return None

        def load():
            from ..understanding.text import TextTower

            return TextTower.from_pretrained(self.text_model_path)

        tower = self._extra("text", load)
        tower.model.to(device)
        return tower

    def describe(self, name: str | None) -> str:
        """Markdown facts about a model (loading it), or how to get one."""
        if not name:
            return NO_MODEL
        model = self.autoencoder(name)
        c = model.config
        fsq = (f"FSQ {c.fsq_num_codebooks} codebooks x {c.fsq_codebook_size} codes" if c.use_quantizer
               else "continuous only (no FSQ quantizer)")
        n = sum(p.numel() for p in model.parameters())
        return (f"**{Path(str(name)).name}**: {n / 1e6:.1f}M parameters, {c.latent_channels} latent channels, "
                f"encoder {c.encoder_depth} x {c.encoder_dim}, decoder {c.decoder_depth} x {c.decoder_dim}, {fsq}; "
                f"on {model.device} ({model.dtype}).")
