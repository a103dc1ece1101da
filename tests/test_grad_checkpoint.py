"""Gradient checkpointing changes memory, not values."""

import copy

import pytest
import torch

from latentae import create_model
from latentae.nn.grad_checkpoint import enable_gradient_checkpointing


@pytest.mark.parametrize("name,size", [("litevae-tiny", 32), ("sdvae-tiny", 32),
                                       ("dcae-tiny-f32", 64)])
def test_checkpointed_gradients_equal_plain_ones(name, size, monkeypatch):
    plain = create_model(name)
    ckpt = copy.deepcopy(plain)
    assert enable_gradient_checkpointing(ckpt) > 0
    assert enable_gradient_checkpointing(ckpt) == 0  # idempotent
    calls = []
    import latentae.nn.grad_checkpoint as mod
    real = mod.checkpoint
    monkeypatch.setattr(mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(2, 3, size, size) * 2 - 1
    grads = []
    for model in (plain, ckpt):
        recon, post = model(x.requires_grad_(True), sample=False)
        (recon.square().mean() + post.kl().mean() * 1e-3).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert calls, "no block was recomputed"
    for n, g in grads[0].items():
        assert torch.allclose(g, grads[1][n], atol=1e-6, rtol=1e-5), n
    with torch.no_grad():  # inference is untouched
        assert torch.equal(plain.eval()(x, sample=False)[0], ckpt.eval()(x, sample=False)[0])


def test_training_config_accepts_the_switch():
    from latentae.train.config import make_config
    assert make_config({"data": "x", "gradient_checkpointing": "true"}).gradient_checkpointing
