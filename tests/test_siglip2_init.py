"""The SigLIP2 -> AToken encoder mapping is exact: with RoPE off, the mapped encoder computes a (tiny, random)
Siglip2VisionModel's last hidden state and pooled embedding, also at a non-square size where both resize the
position table."""

from __future__ import annotations

import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.losses import siglip2_patches
from atoken_diffusers.training.siglip2_init import init_encoder_from_siglip2
from tests.conftest import real_image


@pytest.fixture(scope="module")
def siglip2(tmp_path_factory):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    cfg = Siglip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              num_patches=256, patch_size=16)
    folder = tmp_path_factory.mktemp("siglip2")
    Siglip2VisionModel(cfg).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("size", [(256, 256), (160, 224)])
def test_mapped_encoder_reproduces_siglip2(siglip2, size):
    from transformers import Siglip2VisionModel

    reference = Siglip2VisionModel.from_pretrained(siglip2).eval()
    model = AutoencoderAToken.from_preset("tiny").eval()
    assert init_encoder_from_siglip2(model, siglip2) == []  # every encoder tensor came from SigLIP2
    x = torch.nn.functional.interpolate(real_image(256, 256), size=size, mode="bilinear", antialias=True)
    with torch.no_grad():
        ref = reference(**siglip2_patches(x, 16))
        model.encoder.use_rope = False
        hidden, layout, _, _ = model._encode_dense_hidden(x)
        pooled = model.encoder.embed(hidden, layout)
        assert (hidden[layout.restore] - ref.last_hidden_state[0]).abs().max() < 1e-5
        assert (pooled - ref.pooler_output).abs().max() < 1e-5
        model.encoder.use_rope = True  # AToken's RoPE changes the function (the mapping is the starting point)
        hidden_rope, _, _, _ = model._encode_dense_hidden(x)
        assert (hidden_rope[layout.restore] - ref.last_hidden_state[0]).abs().max() > 1e-3


def test_size_mismatch_is_named(siglip2):
    model = AutoencoderAToken.from_preset("tiny", encoder_dim=128, encoder_heads=2)
    with pytest.raises(ValueError, match="sizes differ"):
        init_encoder_from_siglip2(model, siglip2)
