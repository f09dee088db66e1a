"""Shared fixtures. Models are tiny (2 blocks, 64 wide); the parity weights are the official-format random weights of
shared/parity, copied to tests/data/parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.conversion import load_original_autoencoder
from atoken_diffusers.utils.atomic import save_atomically
from tests.generation_data import gen_data, one_thread  # noqa: F401  (fixtures shared by the generation tests)

PARITY = Path(__file__).parent / "data" / "parity"

# Two runs of the same float32 computation may differ in the last bits: BLAS kernels and how work is split over
# threads vary by CPU (2.4e-7 was seen between two identical Wan pipeline calls on an AMD EPYC). Outputs of such runs
# (pixels in [-1, 1] or [0, 1], latents of order 1) are compared to 1e-5: ~40x that noise, far below any real change
# (another seed or another weight moves them by 1e-2 or more). Integer results (indices, labels) stay exact.
RUN_TO_RUN = dict(atol=1e-5, rtol=1e-5)


def assert_same_run(actual, expected, **tolerance) -> None:
    """Assert that two runs of one float computation agree within :data:`RUN_TO_RUN` (tensors or numpy arrays)."""
    torch.testing.assert_close(torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual),
                               torch.as_tensor(np.asarray(expected) if not torch.is_tensor(expected) else expected),
                               **{**RUN_TO_RUN, **tolerance})


def max_difference(a, b) -> float:
    """Largest absolute difference of two arrays/tensors (to assert that two runs really differ)."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope="session")
def converted_dirs(tmp_path_factory) -> dict[str, Path]:
    """The parity checkpoint converted with both configs into diffusers folders."""
    root = tmp_path_factory.mktemp("converted")
    out = {}
    for name, config in (("plain", "atoken_config.yaml"), ("fsq", "atoken_config_fsq.yaml")):
        model = load_original_autoencoder(PARITY / "atoken.pt", PARITY / config)
        out[name] = save_atomically(model, root / name)
    return out


@pytest.fixture(scope="session")
def fsq_model(converted_dirs) -> AutoencoderAToken:
    return AutoencoderAToken.from_pretrained(converted_dirs["fsq"]).eval()


@pytest.fixture()
def plain_model(converted_dirs) -> AutoencoderAToken:
    """The official-format tiny weights without FSQ (a fresh copy per test)."""
    return AutoencoderAToken.from_pretrained(converted_dirs["plain"]).eval()


@pytest.fixture()
def tiny_model() -> AutoencoderAToken:
    torch.manual_seed(0)
    return AutoencoderAToken.from_preset("tiny").eval()


def real_image(height: int = 64, width: int = 80) -> torch.Tensor:
    """scikit-image's astronaut photograph, downsampled and cropped, as (1, 3, H, W) in [-1, 1]."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)[:height, :width]
    return torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)[None] * 2 - 1


@pytest.fixture()
def image() -> torch.Tensor:
    return real_image()
