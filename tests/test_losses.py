"""Each training loss has the property that defines it. The perceptual networks have random weights of the real
architectures (no pretrained weights can be downloaded here); the properties do not depend on the weights."""

from __future__ import annotations

import pytest
import torch

from atoken_diffusers.losses import (
    LPIPS,
    FeaturePerceptualLoss,
    FrozenVisionTower,
    GramLoss,
    VGGFeatures,
    distillation_loss,
    gaussian_kl,
    gram_distance,
    siglip_sigmoid_loss,
)
from tests.conftest import assert_same_run, real_image


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    x = real_image(64, 64)
    return x, (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)


def test_gram_zero_for_identical_and_invariant_to_spatial_permutation():
    torch.manual_seed(0)
    a = [torch.randn(2, 8, 6, 5), torch.randn(2, 16, 3, 3)]
    b = [torch.randn(2, 8, 6, 5), torch.randn(2, 16, 3, 3)]
    assert gram_distance(a, a).item() == 0
    perm = [f.flatten(2)[..., torch.randperm(f.shape[2] * f.shape[3])] for f in b]
    assert gram_distance(a, b).item() > 0
    assert torch.allclose(gram_distance(a, perm), gram_distance(a, b), rtol=1e-5)


def test_gram_loss_through_vgg19(images):
    x, noisy = images
    loss = GramLoss(VGGFeatures("vgg19", ("relu1_2", "relu2_2", "relu3_4")))
    assert loss(x, x).item() == 0
    assert loss(noisy, x).item() > 0
    noisy = noisy.clone().requires_grad_(True)
    loss(noisy, x).backward()
    assert noisy.grad.abs().sum() > 0


def test_vgg_loads_torchvision_format_file(tmp_path):
    torch.manual_seed(1)
    net = VGGFeatures("vgg16", ("relu2_2",))
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    torch.save(state, tmp_path / "vgg16.pth")
    loaded = VGGFeatures("vgg16", ("relu2_2",), weights=tmp_path / "vgg16.pth")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert_same_run(loaded(x)[0], net(x)[0])
    with pytest.raises(ValueError, match="relu9_9"):
        VGGFeatures("vgg16", ("relu9_9",))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision vgg16 file"):
        VGGFeatures("vgg16", ("relu2_2",), weights=tmp_path / "bad.pth")


def test_lpips_is_a_distance_and_loads_head_files(images, tmp_path):
    x, noisy = images
    torch.manual_seed(0)
    lp = LPIPS()
    assert lp(x, x).item() == pytest.approx(0, abs=1e-7)
    assert lp(noisy, x).item() > 0
    heads = {f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 0.5) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, tmp_path / "vgg.pth")
    with_heads = LPIPS(lin_weights=tmp_path / "vgg.pth")
    assert torch.equal(with_heads.lin3, torch.full((1, 512, 1, 1), 0.5))
    assert with_heads(noisy, x).item() > 0


def test_distillation_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    teacher, text = torch.randn(4, 16), torch.randn(6, 16)
    assert distillation_loss(teacher, teacher, text).item() == pytest.approx(0, abs=1e-6)
    student = teacher + torch.randn(4, 16)
    assert distillation_loss(student, teacher, text).item() > 0
    with pytest.raises(ValueError, match="share D"):
        distillation_loss(teacher, teacher, torch.randn(6, 8))


def test_sigmoid_loss_prefers_matched_pairs():
    torch.manual_seed(0)
    text = torch.randn(4, 16)
    matched = siglip_sigmoid_loss(text, text, 2.3, -5.0)
    shuffled = siglip_sigmoid_loss(text[[1, 2, 3, 0]], text, 2.3, -5.0)
    assert matched < shuffled


def test_gaussian_kl_zero_for_the_prior():
    assert gaussian_kl(torch.zeros(10, 8)).item() == 0
    assert gaussian_kl(torch.cat([torch.ones(10, 4), torch.zeros(10, 4)], 1)).item() == pytest.approx(2.0)


def test_clip_feature_loss_with_a_siglip2_tower(images):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    x, noisy = images
    torch.manual_seed(0)
    cfg = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              num_patches=16, patch_size=16)
    loss = FeaturePerceptualLoss(FrozenVisionTower(Siglip2VisionModel(cfg), image_size=64))
    assert loss(x, x).item() == 0
    assert loss(noisy, x).item() > 0
