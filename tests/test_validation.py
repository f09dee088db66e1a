"""Bad input gets an error that names the argument and the fix."""

import pytest
import torch

from atoken_diffusers import SparseTokens


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(3, 32, 32), ValueError, r"x must be images .*rank 3.*x\[None\]"),
        (torch.zeros(1, 4, 32, 32), ValueError, "x must have 3 channels"),
        (torch.zeros(1, 32, 32, 3), ValueError, "channel-last input"),
        (torch.full((1, 3, 32, 32), 255.0), ValueError, r"values up to 255.*x / 127.5 - 1"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "x contains 3072 NaN/Inf"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, r"x has dtype torch.uint8.*127.5"),
        (torch.zeros(0, 3, 32, 32), ValueError, "x is empty"),
        ([[0.0]], TypeError, "x must be a torch.Tensor"),
    ],
)
def test_pixel_errors(tiny_model, x, error, message):
    with pytest.raises(error, match=message):
        tiny_model.encode(x)


def test_inf_is_reported(tiny_model):
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        tiny_model.embed(x)


def test_latent_errors(tiny_model):
    with pytest.raises(ValueError, match="z must have 12 latent channels"):
        tiny_model.decode(torch.zeros(1, 48, 2, 2))
    with pytest.raises(ValueError, match="z must be image latents"):
        tiny_model.decode(torch.zeros(12, 2, 2))
    with pytest.raises(ValueError, match="z contains .* NaN"):
        tiny_model.decode(torch.full((1, 12, 2, 2), float("nan")))


def test_fsq_index_errors(fsq_model):
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4096\)"):
        fsq_model.detokenize(torch.full((1, 2, 2, 2), 4096))
    with pytest.raises(ValueError, match=r"indices must have shape \(B, 2, h, w\)"):
        fsq_model.detokenize(torch.zeros(1, 3, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        fsq_model.detokenize(torch.zeros(1, 2, 2, 2))


def test_sparse_token_errors(tiny_model):
    with pytest.raises(ValueError, match="coords must be"):
        SparseTokens(torch.zeros(4, 3072), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens.feats must have 3072 channels"):
        tiny_model.encode_tokens(SparseTokens(torch.zeros(4, 768), torch.zeros(4, 5, dtype=torch.long)))
    gap = torch.zeros(2, 5, dtype=torch.long)
    gap[1, 0] = 2
    with pytest.raises(ValueError, match="0..B-1 without gaps"):
        tiny_model.encode_tokens(SparseTokens(torch.zeros(2, 3072), gap))
