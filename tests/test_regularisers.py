"""Diffusability regularisers (losses/regularisers.py): zero for an exactly equivariant
autoencoder and positive otherwise, transforms of latent and image agree in orientation,
and in training the terms resume bit for bit, scale with --steps-scale and are refused
without a trainable encoder."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_train import final_weights, tiny_config
from torch import nn

from latentae.errors import InputError
from latentae.losses.regularisers import (
    ROTATIONS,
    decoder_noise_loss,
    equivariance_loss,
    latent_scale_equivariance_loss,
    noisy_latents,
    reconstruction,
    regulariser_terms,
    transform,
)
from latentae.models.distributions import DeterministicPosterior
from latentae.train.autoencoder import train
from latentae.train.config import make_config, resolve_recipe
from latentae.train.recipes import LossWeights

F8 = 4  # the toy autoencoders' compression


class PoolAE(nn.Module):
    """Exactly scale- and rotation-equivariant on block-constant images: f×f average
    pooling in, nearest upsampling out; ``bias`` adds a left-to-right ramp to the output
    (breaks rotation equivariance)."""

    def __init__(self, f: int = F8, bias: float = 0.0) -> None:
        super().__init__()
        self.f, self.bias = f, bias
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return DeterministicPosterior(F.avg_pool2d(x, self.f))

    def decode(self, z):
        y = F.interpolate(z, scale_factor=self.f, mode="nearest")
        ramp = torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)
        return y + self.bias * ramp


def block_image(blocks: int = 4, cell: int = 4 * F8, seed: int = 0) -> torch.Tensor:
    """``(2, 3, blocks·cell, blocks·cell)``: random multiples of 1/8 (exact in float
    arithmetic) constant on cell×cell blocks, cell a multiple of the largest down-scaling
    times f (so every transform is exact)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(-8, 9, (2, 3, blocks, blocks), generator=g) / 8
    return v.repeat_interleave(cell, -2).repeat_interleave(cell, -1)


def l1(a, b):
    return (a - b).abs().mean()


@pytest.mark.parametrize("s", (2, 4))
@pytest.mark.parametrize("k", ROTATIONS)
def test_equivariance_loss_zero_for_an_equivariant_autoencoder(s, k):
    ae, x = PoolAE(), block_image()
    z = ae.encode(x).mode()
    assert float(equivariance_loss(ae.decode, z, x, s, k, l1)) == 0.0
    assert float(latent_scale_equivariance_loss(ae.decode, z, x, s, l1)) == 0.0


@pytest.mark.parametrize("k", ROTATIONS)
def test_equivariance_loss_positive_otherwise(k):
    x = block_image()
    ramp = PoolAE(bias=0.2)  # an output ramp left to right: rotations see it
    assert float(equivariance_loss(ramp.decode, ramp.encode(x).mode(), x, 2, k, l1)) > 1e-3
    # Not block-constant at the pooled scale: down-scaling the latent loses what the
    # pooled image keeps -> the scale terms are positive too.
    ae, xr = PoolAE(), torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    z = ae.encode(xr * 2 - 1).mode()
    assert float(equivariance_loss(ae.decode, z, xr * 2 - 1, 2, k, l1)) > 1e-3
    assert float(latent_scale_equivariance_loss(ae.decode, z, xr * 2 - 1, 4, l1)) > 1e-3


def test_rotation_and_scaling_agree_in_orientation():
    # An asymmetric image: one bright block in the top-left corner. A quarter turn
    # (k = 1, counter-clockwise as torch.rot90 over (H, W)) puts it bottom-left, on the
    # image and on the decoded latent alike; the other direction would not match.
    ae, cell = PoolAE(), 4 * F8
    x = -torch.ones(1, 3, 4 * cell, 4 * cell)
    x[..., :cell, :cell] = 1.0
    y = transform(x, 2, 1)                                            # (1, 3, 64, 64)
    h = y.shape[-1] // 4
    assert float(y[..., -h:, :h].mean()) == 1.0 and float(y[..., :h, :h].mean()) == -1.0
    z = ae.encode(x).mode()
    decoded = ae.decode(transform(z, 2, 1))
    assert torch.equal(decoded, y)
    assert not torch.equal(ae.decode(transform(z, 2, 3)), y)  # the wrong turn fails
    assert not torch.equal(ae.decode(z.flip(-1)[..., ::2, ::2]), y)  # a mirror fails


def test_decoder_noise_draws_per_sample_sigma_and_detaches():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, 8, 8, requires_grad=True)
    noisy = noisy_latents(z, 0.5, g)
    assert not noisy.requires_grad  # only the decoder learns from this term
    per_sample = (noisy - z.detach()).flatten(1).std(1) / z.detach().std()
    assert per_sample.min() < per_sample.max() <= 0.5 * 1.5  # σ differs per sample
    ae, x = PoolAE(), block_image()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = decoder_noise_loss(ae.decode, ae.encode(x).mode(), x, 0.2, g1, l1)
    b = decoder_noise_loss(ae.decode, ae.encode(x).mode(), x, 0.2, g2, l1)
    assert float(a) == float(b) > 0.0  # seeded: repeatable, and noise costs something


def test_terms_follow_the_weights_and_the_probability():
    ae, x = PoolAE(bias=0.2), block_image()
    z = ae.encode(x).mode()
    rec = reconstruction(None)
    never = LossWeights(equivariance=2.0, equivariance_p=0.0)
    assert regulariser_terms(never, ae.decode, z, x, torch.Generator(), None) == {}
    w = LossWeights(equivariance=2.0, equivariance_p=1.0, latent_scale_equivariance=0.5,
                    decoder_noise=0.25)
    terms = regulariser_terms(w, ae.decode, z, x, torch.Generator().manual_seed(0), None)
    assert set(terms) == {"equivariance", "latent_scale_equivariance", "decoder_noise"}
    g = torch.Generator().manual_seed(0)
    torch.rand((), generator=g)  # the same draws in the same order
    s = (2, 4)[int(torch.randint(2, (), generator=g))]
    k = ROTATIONS[int(torch.randint(3, (), generator=g))]
    assert float(terms["equivariance"]) == pytest.approx(
        2.0 * float(equivariance_loss(ae.decode, z, x, s, k, rec)))


def regulariser_config(tmp_path, out, **kw):
    over = {"losses.equivariance": 1.0, "losses.equivariance_p": 0.5,
            "losses.latent_scale_equivariance": 0.5, "losses.decoder_noise": 0.5,
            "discriminator_on": False}
    over.update(kw.pop("overrides", {}))
    return tiny_config(tmp_path, out, overrides=over, **kw)


def test_new_terms_are_logged_and_resume_bit_identically(tmp_path):
    train(regulariser_config(tmp_path, "full"))
    logged = {k for line in open(tmp_path / "full" / "metrics.jsonl")
              for k in json.loads(line)}
    assert {"latent_scale_equivariance", "decoder_noise"} <= logged
    assert train(regulariser_config(tmp_path, "split", max_steps=4)) is None
    train(regulariser_config(tmp_path, "split", resume="auto"))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_eqvae_finetune_scales_with_steps_scale():
    full = resolve_recipe(make_config({"data": "x", "recipe": "eqvae-finetune"}))
    small = resolve_recipe(make_config({"data": "x", "recipe": "eqvae-finetune",
                                        "steps_scale": 0.001}))
    (pf,), (ps,) = full.phases, small.phases
    assert ps.steps == round(pf.steps * 0.001) and ps.disc_warmup == 1
    assert ps.losses == pf.losses and ps.losses.equivariance == 1.0
    assert ps.losses.equivariance_p == 0.5 and ps.train_groups == ("all",)


@pytest.mark.parametrize("term", ("equivariance", "latent_scale_equivariance"))
def test_refused_without_a_trainable_encoder(tmp_path, term):
    cfg = regulariser_config(tmp_path, "frozen", overrides={
        "losses.equivariance": 0, "losses.latent_scale_equivariance": 0,
        f"losses.{term}": 1.0, "train_groups": "decoder"})
    with pytest.raises(InputError, match=f"losses.{term} .*trainable encoder"):
        train(cfg)
    # decoder_noise trains the decoder only: allowed with a frozen encoder
    ok = regulariser_config(tmp_path, "dec", overrides={
        "losses.equivariance": 0, "losses.latent_scale_equivariance": 0,
        "train_groups": "decoder", "steps": 1}, max_steps=1)
    train(ok)  # no error: one step taken
    assert (tmp_path / "dec" / "checkpoints").is_dir()


def test_eqvae_finetune_of_a_diffusers_autoencoder_reports_diagnostics(tmp_path):
    # A diffusers AutoencoderKL fine-tuned by eqvae-finetune: encoder and decoder move,
    # the equivariance term is logged, the regression report has the diagnostics of the
    # model before and after.
    from test_finetune import finetune_config  # diffusers: imported where needed

    cfg = finetune_config(tmp_path, "sd", "eqvae-finetune",
                          overrides={"lr": 1e-3, "steps": 3, "losses.equivariance_p": 1.0})
    out = train(cfg)
    logged = [json.loads(line) for line in open(out.parent / "metrics.jsonl")]
    assert all(r["equivariance"] > 0 for r in logged if "loss" in r)
    doc = json.loads((out.parent / "regression.json").read_text())
    ref = doc["sets"]["reference"]
    assert ref["latent_max_abs_diff"] > 0  # the encoder trains
    diag = ref["diffusability"]
    assert diag["before"]["equivariance_psnr_x2"] != diag["after"]["equivariance_psnr_x2"]
    assert "| equivariance_psnr_x2 |" in (out.parent / "regression.md").read_text()
