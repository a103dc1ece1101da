"""Recipes as data: their parameter groups exist in the models they train, the DC-AE
adaptation depth (DC-AE App. G, Fig. 11) can be swept from the command line, and the
paper values they cite hold."""

from __future__ import annotations

import math

import pytest
import torch

import latentae
from latentae.cli.train import parse_sets
from latentae.errors import InputError
from latentae.train.config import make_config, resolve_recipe
from latentae.train.recipes import RECIPES, Phase, get_recipe, phase_lr

FAMILY_OF_RECIPE = {"litevae": "litevae-*", "dcae": "dcae-*", "sdvae": "sdvae-*",
                    "finetune-decoder": "sdvae-*", "finetune-full": "sdvae-*",
                    "eqvae-finetune": "*"}  # any loadable autoencoder


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_train_group_of_a_recipe_exists_in_its_family(recipe):
    for name in latentae.list_models(FAMILY_OF_RECIPE[recipe]):
        with torch.device("meta"):
            groups = latentae.create_model(name).param_groups()
        for phase in get_recipe(recipe).phases:
            assert set(phase.train_groups) <= set(groups), (name, phase.name)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dcae_adaptation_depth_is_swept_with_set(k):
    sets = [f"highres-adapt.train_groups=encoder.head.{k},decoder.input.{k}",
            f"refine.train_groups=decoder.head.{k}"]
    cfg = make_config({"data": "x", "recipe": "dcae", "recipe_overrides": parse_sets(sets)})
    phases = resolve_recipe(cfg).phases
    assert phases[1].train_groups == (f"encoder.head.{k}", f"decoder.input.{k}")
    assert phases[2].train_groups == (f"decoder.head.{k}",)
    assert phases[0].train_groups == ("all",)  # the other phases keep theirs
    groups = latentae.create_model("dcae-tiny-f32").param_groups()
    assert set(phases[1].train_groups) | set(phases[2].train_groups) <= set(groups)


def test_sdvae_recipe_is_the_ldm_config():
    # LDM autoencoder_kl_*: disc_weight 0.5 times the adaptive ratio, disc_start 50,001,
    # kl_weight 1e-6, Adam betas (0.5, 0.9).
    (phase,) = get_recipe("sdvae").phases
    w = phase.losses
    assert (w.adversarial, w.adaptive, w.kl, w.perceptual) == (0.5, True, 1e-6, 1.0)
    assert (phase.disc_start, phase.betas, phase.gan_loss) == (50_001, (0.5, 0.9), "hinge")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_no_recipe_turns_on_what_its_paper_does_not_use(recipe):
    for phase in get_recipe(recipe).phases:
        assert phase.losses.cutmix == 0 and phase.losses.r1 == 0
        # LiteVAE §6 drops the adaptive weight; DC-AE (App. E) states none; the
        # fine-tunes keep the LDM loss of the SD-VAE they start from (EQ-VAE's config
        # is LDM's LPIPSWithDiscriminator too).
        assert phase.losses.adaptive == (recipe in ("sdvae", "finetune-decoder",
                                                    "finetune-full", "eqvae-finetune"))
        # the diffusability regularisers: only EQ-VAE's own recipe turns one on
        assert phase.losses.equivariance == (1.0 if recipe == "eqvae-finetune" else 0.0)
        assert phase.losses.latent_scale_equivariance == phase.losses.decoder_noise == 0


def test_finetune_decoder_trains_the_decoder_side_only():
    # SDVAE.param_groups: post_quant_conv is on the decoder side, quant_conv on the
    # encoder side; the KL term would only reach the frozen encoder, so it is off.
    (phase,) = get_recipe("finetune-decoder").phases
    assert phase.train_groups == ("decoder",) and phase.losses.kl == 0
    model = latentae.create_model("sdvae-tiny")
    groups = {k: {id(p) for p in v} for k, v in model.param_groups().items()}
    assert id(model.post_quant_conv.weight) in groups["decoder"]
    assert id(model.quant_conv.weight) in groups["encoder"]
    assert not groups["decoder"] & groups["encoder"]
    (full,) = get_recipe("finetune-full").phases
    assert full.train_groups == ("all",) and full.lr < phase.lr


def test_phase_lr_warm_up_then_decay_to_zero():
    def lrs(decay: str) -> list[float]:
        phase = Phase("p", 100, 32, 1, 2.0, warmup_steps=10, lr_decay=decay)
        return [phase_lr(phase, s) for s in (0, 9, 50, 100)]
    assert lrs("constant") == pytest.approx([0.2, 2.0, 2.0, 2.0])
    assert lrs("cosine") == pytest.approx([0.2, 2.0 * (1 + math.cos(math.pi * 0.09)) / 2,
                                           1.0, 0.0])
    assert lrs("linear") == pytest.approx([0.2, 2.0 * 0.91, 1.0, 0.0])


def test_lr_decay_is_a_checked_recipe_field():
    cfg = make_config(dict(data="x", recipe_overrides={"lr_decay": "cosine",
                                                       "warmup_steps": 5}))
    assert {(p.lr_decay, p.warmup_steps) for p in resolve_recipe(cfg).phases} == {("cosine", 5)}
    with pytest.raises(InputError, match="lr_decay must be one of"):
        resolve_recipe(make_config(dict(data="x", recipe_overrides={"lr_decay": "step"})))


def test_a_config_saved_before_the_lr_schedule_fields_still_resumes():
    import dataclasses

    from latentae.engine.rundir import agrees
    from latentae.train.config import config_document, make_config
    from latentae.train.recipes import ADDED_PHASE_FIELDS, get_recipe

    def agrees_(old, new):
        return agrees(old, new, ADDED_PHASE_FIELDS)  # what the autoencoder task hands

    cfg = make_config(dict(model="litevae-tiny", data="d", out="o"))
    new = config_document(cfg, get_recipe("litevae"))["recipe"]
    old = {**new, "phases": [{k: v for k, v in p.items() if k not in ("warmup_steps",
                                                                        "lr_decay")}
                             for p in new["phases"]]}
    assert agrees_(old, new)  # written by an older latentae: the defaults it ran with
    phases = tuple(dataclasses.replace(p, lr_decay="cosine")
                   for p in get_recipe("litevae").phases)
    cosine = config_document(cfg, dataclasses.replace(get_recipe("litevae"),
                                                      phases=phases))["recipe"]
    assert not agrees_(old, cosine)  # a schedule the old run never had: refused
    assert not agrees_(new, {**new, "name": "other"})
    assert not agrees_({**new, "gone": 1}, new)  # a field this version does not know
