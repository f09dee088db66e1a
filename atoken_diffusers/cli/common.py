"""Helpers shared by the command-line tools: dtype choices, model loading with messages phrased for ``--model``, and
what ``--quiet`` turns off.

Nothing here imports torch at module level: building the parser (``atoken --help``, argument errors) must stay as
fast as a bare ``python -c "import torch"`` or faster, so torch and the model code load inside the functions."""

from __future__ import annotations

from .errors import UsageError

# The keys of ``models.loading.DTYPES`` (tests/test_cli.py checks they agree), spelt out so parsers need no torch.
DTYPE_CHOICES = ("bf16", "fp16", "fp32")


def quiet(args) -> bool:
    """``atoken --quiet``: progress bars and informational lines off; result lines (PSNR, "wrote ...") still print.

    Read with ``getattr`` because tests build sub-parsers without the global flag."""
    return bool(getattr(args, "quiet", False))


def progress_enabled(args) -> bool | None:
    """The ``enabled`` argument of :func:`~atoken_diffusers.utils.progress.progress_bar` for this command: False
    under ``--quiet``, else None (bars only when stderr is a terminal)."""
    return False if quiet(args) else None


def info(args, message: str) -> None:
    """Print an informational line (notes, hints), unless ``--quiet``."""
    if not quiet(args):
        print(message)


def torch_dtype(name: str):
    """The torch dtype of a ``--dtype`` choice (fp32, bf16, fp16)."""
    from ..models.loading import DTYPES

    return DTYPES[name]


def pick_device(name: str | None):
    """:func:`~atoken_diffusers.models.loading.pick_device` (imported on call: it needs torch), with ``--device``
    checked first: a name torch does not know, or a CUDA device this machine lacks, is a :class:`UsageError`."""
    import torch

    from ..models.loading import pick_device as pick

    if name:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise UsageError(f"--device {name}: not a device name; use cpu, cuda, cuda:1, mps, ...") from None
        if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
            raise UsageError(f"--device {name}: this machine has {found}; use --device cpu or a listed GPU.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UsageError(f"--device {name}: MPS is not available here; use --device cpu.")
    return pick(name)


def load_model(path: str, config: str | None = None, dtype: str = "fp32", device: str | None = None):
    """:func:`~atoken_diffusers.models.loading.load_autoencoder` on the checked ``--device``, its path errors turned
    into :class:`UsageError` (exit status 2) naming ``--model``."""
    from ..models.loading import load_autoencoder

    device = str(pick_device(device))
    try:
        return load_autoencoder(path, config, dtype, device)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model {err}") from None
