"""Each loss against a value computed by hand (or scipy) on a small tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import latentae
from latentae.losses import (
    adaptive_weight,
    charbonnier_loss,
    discriminator_loss,
    gaussian_blur,
    generator_loss,
    highpass_l1_loss,
    kl_loss,
    l1_loss,
    l2_loss,
    r1_penalty,
    wavelet_charbonnier_loss,
)
from latentae.models.distributions import DeterministicPosterior, DiagonalGaussian
from latentae.nn.wavelets import dwt2


def test_l1_l2_hand_values():
    x_hat = torch.tensor([1.0, -2.0, 3.0, 0.0]).view(1, 1, 2, 2)
    x = torch.zeros_like(x_hat)
    assert l1_loss(x_hat, x).item() == pytest.approx(6 / 4)
    assert l2_loss(x_hat, x).item() == pytest.approx(14 / 4)


def test_charbonnier_hand_value():
    x_hat = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)
    eps = 0.5
    want = (math.sqrt(0 + eps**2) + math.sqrt(9 + eps**2)) / 2
    assert charbonnier_loss(x_hat, torch.zeros_like(x_hat), eps).item() == pytest.approx(want)


def test_wavelet_loss_uses_only_high_bands_halved():
    eps = 1e-3
    # A constant 2x2 block has only an LL coefficient: the loss is the floor eps.
    flat = torch.ones(1, 1, 2, 2)
    assert wavelet_charbonnier_loss(flat, torch.zeros_like(flat), eps).item() == pytest.approx(eps)
    # [[1, 0], [0, 0]]: LH = HL = HH = 1/2 (orthonormal Haar), halved (App. G) to 1/4.
    spike = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    want = math.sqrt(0.25**2 + eps**2)
    got = wavelet_charbonnier_loss(spike, torch.zeros_like(spike), eps).item()
    assert got == pytest.approx(want)


def test_wavelet_loss_matches_pywavelets_bands_over_two():
    pywt = pytest.importorskip("pywt")
    g = torch.Generator().manual_seed(0)
    x_hat, x = torch.rand(2, 3, 8, 6, generator=g, dtype=torch.float64).unbind(0)
    eps = 0.05
    # pywt.dwt2 -> (cA, (cH, cV, cD)); LiteVAE App. G compares the detail bands / 2.
    _, hi_hat = pywt.dwt2(x_hat.numpy(), "haar")
    _, hi = pywt.dwt2(x.numpy(), "haar")
    d = (np.stack(hi_hat) - np.stack(hi)) / 2
    want = np.sqrt(d**2 + eps**2).mean()
    got = wavelet_charbonnier_loss(x_hat[None], x[None], eps).item()
    assert got == pytest.approx(want, rel=1e-10)


def test_wavelet_loss_on_a_wavelet_decoder_compares_its_own_output():
    model = latentae.create_model("litevae-tiny", output="wavelet").eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = model.encode(x).mode()
    with torch.no_grad():
        bands = model.decode_wavelet(z)  # (1, 12, 16, 16): level-1 bands / 2
        got = wavelet_charbonnier_loss(model.decode(z), x)
        want = charbonnier_loss(bands[:, 3:], dwt2(x)[:, 3:] / 2)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 2, 12, 10, dtype=torch.float64)
    got = gaussian_blur(x, 1.0).numpy()
    # torch "reflect" padding (edge not repeated) is scipy's "mirror"; radius ceil(3σ).
    want = np.stack([ndimage.gaussian_filter(x[0, c].numpy(), 1.0, mode="mirror", truncate=3.0)
                     for c in range(2)])[None]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_highpass_loss_hand_values():
    # A constant offset has no high frequencies: loss 0 though L1 is 0.7.
    x = torch.rand(1, 3, 16, 16)
    assert highpass_l1_loss(x + 0.7, x).item() == pytest.approx(0.0, abs=1e-6)
    # Otherwise equals L1 between the explicit high-pass images.
    y = torch.rand(1, 3, 16, 16)
    want = (y - gaussian_blur(y, 2.0) - x + gaussian_blur(x, 2.0)).abs().mean()
    assert highpass_l1_loss(y, x, sigma=2.0).item() == pytest.approx(want.item())


def test_kl_loss_hand_value():
    image = torch.zeros(2, 3, 8, 8)
    mean = torch.zeros(2, 1, 1, 2)
    mean[:, :, :, 0] = 1.0  # KL per element: 0.5·mean² -> 0.5 per image
    post = DiagonalGaussian(torch.cat([mean, torch.zeros_like(mean)], dim=1))
    assert kl_loss(post, image).item() == pytest.approx(0.5 / (3 * 8 * 8))
    assert kl_loss(DeterministicPosterior(mean), image).item() == 0.0


def test_hinge_and_non_saturating_hand_values():
    real = [torch.tensor([2.0, 0.0])]
    fake = [torch.tensor([-2.0, 0.5])]
    # hinge: relu(1 - r) = [0, 1] -> 0.5; relu(1 + f) = [0, 1.5] -> 0.75
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.5 * 1.25)
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want = 0.5 * ((sp(-2) + sp(0)) / 2 + (sp(-2) + sp(0.5)) / 2)
    assert discriminator_loss(real, fake, "non-saturating").item() == pytest.approx(want)
    assert generator_loss(fake, "hinge").item() == pytest.approx(0.75)
    assert generator_loss(fake, "non-saturating").item() == pytest.approx((sp(2) + sp(-0.5)) / 2)


def test_losses_sum_over_discriminator_outputs():
    real = [torch.tensor([2.0]), torch.full((1, 1, 2, 2), 0.0)]
    fake = [torch.tensor([0.0]), torch.full((1, 1, 2, 2), -1.0)]
    # output 1: 0.5·(0 + 1) ; output 2: 0.5·(1 + 0)
    assert discriminator_loss(real, fake).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid"):
        generator_loss(fake, "wasserstein")


def test_r1_penalty_of_linear_discriminator():
    w = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)
    x = torch.rand(3, 1, 2, 2, requires_grad=True)
    logits = [(x * w).sum(dim=(1, 2, 3))]  # ∇_x D = w for every sample
    assert r1_penalty(x, logits).item() == pytest.approx((w**2).sum().item())


def test_adaptive_weight_formula():
    w = torch.ones(5, requires_grad=True)
    rec, adv = 3.0 * w.sum(), -0.5 * w.sum()  # gradients 3·1 and -0.5·1
    got = adaptive_weight(rec, adv, w, delta=1e-4).item()
    # LiteVAE eq. 2 without its ½ (LDM's disc_weight, applied as LossWeights.adversarial)
    want = 3 * math.sqrt(5) / (0.5 * math.sqrt(5) + 1e-4)
    assert got == pytest.approx(want, rel=1e-6)
    big = adaptive_weight(1e9 * w.sum(), 1e-9 * w.sum(), w, max_weight=1e4)
    assert big.item() == 1e4 and not big.requires_grad
