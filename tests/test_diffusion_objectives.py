"""Objectives: the DiT schedule and respacing, q_sample, the ε / learned-variance / flow losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_oracle import gaussian_model, learned_variance_model, min_mse, random_law

from latentae.diffusion import (
    NoiseSchedule,
    ddpm_loss,
    ddpm_loss_terms,
    ddpm_schedule,
    flow_interpolate,
    flow_loss,
    flow_loss_terms,
    get_schedule,
    q_sample,
    respace,
    sample_flow_t,
    space_timesteps,
)
from latentae.errors import InputError

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 2, 2)
D = 8


def _data(n, mu, cov, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    return (mu + z @ torch.linalg.cholesky(cov).T).float().reshape(n, *SHAPE)


def test_schedule_is_dit_linear_and_matches_diffusers():
    sched = ddpm_schedule()
    assert sched.betas.dtype == torch.float64 and len(sched) == 1000
    assert float(sched.betas[0]) == 1e-4 and abs(float(sched.betas[-1]) - 0.02) < 1e-15
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                     beta_schedule="linear")
    assert float((theirs.betas.double() - sched.betas).abs().max()) < 2e-9  # float32 vs float64
    rel = (theirs.alphas_cumprod.double() / sched.alphas_cumprod - 1).abs().max()
    assert float(rel) < 4e-7  # measured 3.6e-7: diffusers' float32 cumulative product


def test_space_timesteps_follows_adm():
    # one section = diffusers linspace (DiT "250"); ADM's docstring example: 300 steps, "10,15,20"
    for n in (10, 25, 50, 100, 250, 1000):
        assert space_timesteps(1000, n) == np.linspace(0, 999, n).round().astype(int).tolist()
    steps = space_timesteps(300, "10,15,20")
    assert len(steps) == 45 and steps[:10] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert steps[-1] == 299 and space_timesteps(1000, "ddim250") == list(range(0, 1000, 4))
    with pytest.raises(InputError, match="1 … 1000"):
        space_timesteps(1000, 1001)
    with pytest.raises(InputError, match="integer stride"):
        space_timesteps(1000, "ddim300")


def test_respacing_keeps_alphas_cumprod_and_original_timesteps():
    full = ddpm_schedule()
    keep = space_timesteps(1000, 250)
    sched = respace(full, keep)
    assert sched.timesteps.tolist() == keep
    assert float((sched.alphas_cumprod - full.alphas_cumprod[keep]).abs().max()) < 1e-14
    assert float(sched.betas[1]) > 3 * float(full.betas[keep[1]])  # recomputed, not copied


def test_q_sample_matches_diffusers_add_noise():
    x0, noise = torch.randn(6, *SHAPE), torch.randn(6, *SHAPE)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                     beta_schedule="linear").add_noise(x0, noise, t)
    # measured 1.4e-6 at t = 0: diffusers' float32 √(1 − ᾱ_0) = √(1 − 0.9999) cancels
    assert float((q_sample(x0, t, noise) - theirs).abs().max()) < 1e-5


def test_eps_loss_at_the_exact_predictor_is_the_analytic_minimum():
    """E[mean (ε − E[ε|x_t])²] = tr(I − σ_t² S_t⁻¹)/d, averaged over t = 0 … 999; a scaled
    predictor scores worse. Tolerance 4·sd/√n of the per-sample losses."""
    mu, cov = random_law(D, 0)
    n = 4000
    x0 = _data(n, mu, cov, 1)
    exact = gaussian_model(mu, cov, "ddpm")
    loss = ddpm_loss(exact, x0, None, generator=torch.Generator().manual_seed(2),
                     learn_sigma=False).double()
    want = sum(min_mse(mu, cov, t, "ddpm") for t in range(1000)) / 1000
    assert abs(float(loss.mean()) - want) < 4 * float(loss.std()) / math.sqrt(n)

    def worse(x, t, y):
        return 1.2 * exact(x, t, y)

    worse_loss = ddpm_loss(worse, x0, None, generator=torch.Generator().manual_seed(2),
                           learn_sigma=False)
    assert float(worse_loss.mean()) > float(loss.mean()) + 4 * float(loss.std()) / math.sqrt(n)


def test_eps_loss_at_one_timestep_is_the_analytic_minimum():
    mu, cov = random_law(D, 0)
    n = 4000
    x0, noise = _data(n, mu, cov, 3), torch.randn(n, *SHAPE)
    for step in (10, 500, 990):
        t = torch.full((n,), step)
        mse = ddpm_loss_terms(gaussian_model(mu, cov, "ddpm"), x0, None, t, noise,
                              learn_sigma=False)["mse"].double()
        assert abs(float(mse.mean()) - min_mse(mu, cov, step, "ddpm")) < 4 * float(
            mse.std()) / math.sqrt(n)


def test_losses_are_reproducible_with_a_generator():
    mu, cov = random_law(D, 0)
    x0 = _data(16, mu, cov, 4)
    for fn, kw, model in [(ddpm_loss, dict(learn_sigma=False), gaussian_model(mu, cov, "ddpm")),
                          (flow_loss, dict(t_sampling="logit_normal"),
                           gaussian_model(mu, cov, "flow"))]:
        a = fn(model, x0, None, generator=torch.Generator().manual_seed(5), **kw)
        b = fn(model, x0, None, generator=torch.Generator().manual_seed(5), **kw)
        c = fn(model, x0, None, generator=torch.Generator().manual_seed(6), **kw)
        assert a.shape == (16,) and torch.equal(a, b) and not torch.equal(a, c)


def _vb_at(mu, var, step, v_shift, n=2000):
    """Mean vb (bits) at ``step`` for diagonal N(mu, diag(var)) with exact ε and v + v_shift."""
    sched = ddpm_schedule()
    exact = learned_variance_model(mu, var, sched)

    def model(x, t, y):
        out = exact(x, t, y)
        return torch.cat([out[:, :2], out[:, 2:] + v_shift], dim=1)

    x0 = _data(n, mu, torch.diag(var), 7)
    terms = ddpm_loss_terms(model, x0, None, torch.full((n,), step),
                            torch.randn(x0.shape, generator=torch.Generator().manual_seed(8)),
                            learn_sigma=True, schedule=sched)
    return terms


def test_learned_variance_bound_is_smallest_at_the_exact_variance():
    """KL(q(x_{t−1}|x_t,x_0) ‖ p) over the variance is minimal at Var(x_{t−1}|x_t): shifting
    v either way from the exact optimum raises the vb term. (Small t only: by t ≈ 600 the
    range log β_t − log β̃_t is so narrow that the bound is flat in v to float32 precision.)"""
    mu, cov = random_law(D, 1, diagonal=True)
    for step in (1, 20, 100):
        best = float(_vb_at(mu, cov.diagonal(), step, 0.0)["vb"].mean())
        for shift in (-0.1, 0.1):
            assert float(_vb_at(mu, cov.diagonal(), step, shift)["vb"].mean()) > best


def test_learned_variance_vb_is_the_gaussian_kl_in_bits_and_stops_the_mean_gradient():
    sched = ddpm_schedule()
    x0, noise = torch.randn(4, *SHAPE), torch.randn(4, *SHAPE)
    t = torch.tensor([1, 10, 400, 999])
    out = torch.randn(4, 4, 2, 2, requires_grad=True)
    terms = ddpm_loss_terms(lambda x, tt, y: out, x0, None, t, noise, learn_sigma=True)
    # independent oracle: torch.distributions on the DDPM posterior and the model's Gaussian
    x_t = q_sample(x0, t, noise)
    ac, ac_prev = sched.alphas_cumprod[t], sched.alphas_cumprod_prev[t]
    b = sched.betas[t]
    shape = (4, 1, 1, 1)
    c1 = (b * ac_prev.sqrt() / (1 - ac)).view(shape).float()
    c2 = ((1 - ac_prev) * (1 - b).sqrt() / (1 - ac)).view(shape).float()
    x0_hat = (x_t - (1 - ac).sqrt().view(shape).float() * out[:, :2]) / ac.sqrt().view(
        shape).float()
    post_var = (b * (1 - ac_prev) / (1 - ac)).view(shape).float()
    frac = (out[:, 2:] + 1) / 2
    var = torch.exp(frac * torch.log(b).view(shape).float() + (1 - frac) * torch.log(post_var))
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(c1 * x0 + c2 * x_t, post_var.sqrt().expand_as(x0)),
        torch.distributions.Normal(c1 * x0_hat + c2 * x_t, var.sqrt()))
    want = kl.mean(dim=(1, 2, 3)) / math.log(2)
    assert torch.allclose(terms["vb"], want, rtol=1e-4, atol=1e-6)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert float(grad[:, :2].abs().max()) == 0.0 and float(grad[:, 2:].abs().max()) > 0


def test_fixed_variance_loss_is_the_mse_alone():
    x0, noise, t = torch.randn(3, *SHAPE), torch.randn(3, *SHAPE), torch.tensor([0, 5, 999])
    terms = ddpm_loss_terms(lambda x, tt, y: torch.zeros_like(x), x0, None, t, noise,
                            learn_sigma=False)
    assert torch.equal(terms["loss"], terms["mse"]) and not terms["vb"].any()
    assert torch.allclose(terms["mse"], (noise**2).mean(dim=(1, 2, 3)))


def test_model_gets_integer_timesteps_and_labels():
    seen = {}

    def model(x, t, y):
        seen.update(t=t, y=y)
        return torch.zeros_like(x)

    labels = torch.arange(5)
    ddpm_loss(model, torch.randn(5, *SHAPE), labels, generator=torch.Generator().manual_seed(0),
              learn_sigma=False)
    assert seen["t"].dtype == torch.int64 and 0 <= int(seen["t"].min()) <= int(seen["t"].max())
    assert int(seen["t"].max()) < 1000 and seen["y"] is labels


def test_flow_loss_at_the_exact_velocity_is_the_analytic_minimum():
    """Fixed t and t ~ U[0, 1]: the mean per-element MSE equals tr Cov(ε − x | x_t)/d
    (midpoint rule over t for the uniform case), within 4·sd/√n."""
    mu, cov = random_law(D, 0)
    n = 4000
    exact = gaussian_model(mu, cov, "flow")
    x0, noise = _data(n, mu, cov, 9), torch.randn(n, *SHAPE)
    for t in (0.0, 0.3, 0.9, 1.0):
        mse = flow_loss_terms(exact, x0, None, torch.full((n,), t), noise).double()
        assert abs(float(mse.mean()) - min_mse(mu, cov, t, "flow")) < 4 * float(
            mse.std()) / math.sqrt(n) + 1e-6
    loss = flow_loss(exact, x0, None, generator=torch.Generator().manual_seed(10)).double()
    want = sum(min_mse(mu, cov, (k + 0.5) / 1000, "flow") for k in range(1000)) / 1000
    assert abs(float(loss.mean()) - want) < 4 * float(loss.std()) / math.sqrt(n)


def test_flow_interpolant_and_velocity_target():
    x0, noise, t = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE), torch.tensor([0.25, 1.0])
    got = {}

    def model(x, tt, y):
        got.update(x=x, t=tt)
        return noise - x0  # the true velocity: zero loss

    loss = flow_loss_terms(model, x0, None, t, noise)
    assert torch.allclose(got["x"][0], 0.75 * x0[0] + 0.25 * noise[0])
    assert torch.equal(got["x"][1], noise[1]) and got["t"].dtype == torch.float32
    assert float(loss.abs().max()) == 0.0


def test_logit_normal_times_have_the_asked_logit_moments():
    t = sample_flow_t(20000, torch.Generator().manual_seed(11), t_sampling="logit_normal",
                      logit_mean=0.5, logit_std=0.8)
    logit = torch.log(t / (1 - t)).double()
    assert ((t > 0) & (t < 1)).all()
    assert abs(float(logit.mean()) - 0.5) < 4 * 0.8 / math.sqrt(20000)
    assert abs(float(logit.std()) - 0.8) < 4 * 0.8 / math.sqrt(2 * 20000)
    u = sample_flow_t(20000, torch.Generator().manual_seed(11))
    assert abs(float(u.double().mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 20000)


def test_bad_objective_arguments_raise_input_error():
    x0 = torch.randn(2, *SHAPE)
    with pytest.raises(InputError, match="uniform, logit_normal"):
        flow_loss(lambda x, t, y: x, x0, None, generator=None, t_sampling="cosine")
    with pytest.raises(InputError, match="latent's shape"):
        flow_loss(lambda x, t, y: x[:, :1], x0, None, generator=None)
    with pytest.raises(InputError, match="must return 4 channels"):
        ddpm_loss(lambda x, t, y: x, x0, None, generator=None, learn_sigma=True)


# ---- noise schedules as data ----------------------------------------------------------------

DIFFUSERS_SCHEDULES = {"linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
                       "scaled-linear": dict(beta_schedule="scaled_linear", beta_start=0.00085,
                                             beta_end=0.012),
                       "cosine": dict(beta_schedule="squaredcos_cap_v2")}


@pytest.mark.parametrize("zero_snr", [False, True], ids=["plain", "zero-snr"])
@pytest.mark.parametrize("name", list(DIFFUSERS_SCHEDULES))
def test_schedules_equal_diffusers_ddpm_scheduler(name, zero_snr):
    """Betas and ᾱ equal DDPMScheduler's (float32 there) and, exactly, diffusers' own formulas
    run in float64 (the cosine ``betas_for_alpha_bar`` and ``rescale_zero_terminal_snr``)."""
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    ns = get_schedule(name + ("+zero-snr" if zero_snr else ""))
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=zero_snr,
                                     **DIFFUSERS_SCHEDULES[name])
    # measured ≤ 7.1e-6 (zero-snr betas near 1 in float32), ᾱ ≤ 7.7e-7
    assert float((ns.betas - theirs.betas.double()).abs().max()) < 2e-5
    assert float((ns.alphas_cumprod - theirs.alphas_cumprod.double()).abs().max()) < 2e-6
    plain = get_schedule(name).betas
    if zero_snr:
        assert float(ns.alphas_cumprod[-1]) == 0.0 and float(ns.betas[-1]) == 1.0
        assert torch.allclose(ns.betas, rescale_zero_terminal_snr(plain), rtol=0, atol=1e-12)
        assert abs(float(ns.alphas_cumprod[0] - get_schedule(name).alphas_cumprod[0])) < 1e-15
    if name == "cosine":  # IDDPM eq. 17 with the 0.999 cap
        abar = [math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(1001)]
        want = [min(1 - abar[k + 1] / abar[k], 0.999) for k in range(1000)]
        assert torch.allclose(plain, torch.tensor(want, dtype=torch.float64), atol=1e-15)


def test_scaled_linear_is_the_uvit_release_schedule_with_steps_one_to_n():
    """U-ViT/DC-AE: betas linspace(√0.00085, √0.012, 1000)², n = 1 … 1000 fed to the network,
    cum_alphas[n] = ∏_{k≤n} (1 − β_k); the issue's logSNR figures (−0.96 at n = 500, −5.4 at
    n = 1000; DiT's linear: −2.47 and −10.1)."""
    ns = get_schedule("scaled-linear")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert torch.equal(ns.betas, betas) and ns.first_timestep == 1
    sched = ddpm_schedule(noise="scaled-linear")
    assert sched.timesteps.tolist() == list(range(1, 1001))
    cum = torch.cumprod(torch.cat([torch.zeros(1, dtype=torch.float64), betas]).neg() + 1, 0)
    assert torch.equal(sched.alphas_cumprod, cum[1:])  # U-ViT's cum_alphas[1:]

    def log_snr(ac, k):
        return math.log(float(ac[k] / (1 - ac[k])))
    assert round(log_snr(ns.alphas_cumprod, 499), 2) == -0.96
    assert round(log_snr(ns.alphas_cumprod, 999), 1) == -5.4
    lin = get_schedule("linear").alphas_cumprod
    assert round(log_snr(lin, 500), 2) == -2.47 and round(log_snr(lin, 999), 1) == -10.1


def test_schedule_specs_round_trip_and_bad_specs_are_input_errors():
    for spec in ("linear", "scaled-linear", "cosine+zero-snr", "scaled-linear@0",
                 "linear@1", "linear/500"):
        assert str(get_schedule(spec)) == spec
    assert get_schedule(None) == get_schedule("") == NoiseSchedule()
    assert get_schedule("scaled-linear@0").timesteps()[0] == 0
    for bad, words in [("sigmoid", "linear, scaled-linear, cosine"), ("linear@2", "@0 or @1"),
                       ("linear/x", "number of timesteps")]:
        with pytest.raises(InputError, match=words):
            get_schedule(bad)


def test_continuous_time_interpolates_log_alpha_between_the_steps():
    """DPM-Solver's discrete-to-continuous map: t_k = (k+1)/N carries ½·log ᾱ_k exactly,
    log α is linear in between, inverse_lambda inverts λ, and the network sees t·N on a
    1-indexed schedule (U-ViT) and 1000·(t − 1/N) on a 0-indexed one (DPM-Solver type-1)."""
    ns = get_schedule("scaled-linear")
    k = torch.tensor([0, 1, 499, 998, 999])
    knots = ((k + 1) / 1000).double()
    assert torch.allclose(ns.log_alpha(knots), 0.5 * ns.alphas_cumprod[k].log(), atol=1e-15)
    mid = ns.log_alpha(torch.tensor(0.5005, dtype=torch.float64))
    assert abs(float(mid) - 0.25 * float(ns.alphas_cumprod[499:501].log().sum())) < 1e-14
    t = torch.tensor([0.001, 0.0123, 0.5, 0.987, 1.0], dtype=torch.float64)
    assert float((ns.inverse_lambda(ns.lambda_(t)) - t).abs().max()) < 1e-12
    assert ns.model_time(0.5) == 500.0 and get_schedule("linear").model_time(0.5) == 499.0


def test_loss_on_another_schedule_feeds_its_timesteps_and_is_the_analytic_minimum():
    """scaled-linear: the network sees n ∈ 1 … 1000; at the exact ε-predictor of that schedule
    the loss is the analytic minimum (Gaussian oracle on the same schedule)."""
    ns = get_schedule("scaled-linear")
    mu, cov = random_law(D, 0)
    n = 2000
    exact = gaussian_model(mu, cov, "ddpm", schedule=ns)
    seen = []

    def model(x, t, y):
        seen.append(t.clone())
        return exact(x, t, y)

    x0 = _data(n, mu, cov, 12)
    loss = ddpm_loss(model, x0, None, generator=torch.Generator().manual_seed(13),
                     learn_sigma=False, noise_schedule=ns).double()
    t = seen[0]
    assert int(t.min()) >= 1 and int(t.max()) <= 1000 and t.dtype == torch.int64
    ac = ns.alphas_cumprod[(t - 1)]  # the step each sample drew
    want = sum(_min_mse_at(mu, cov, float(a)) for a in ac) / n
    assert abs(float(loss.mean()) - want) < 4 * float(loss.std()) / math.sqrt(n)


def _min_mse_at(mu, cov, ac):
    eye = torch.eye(D, dtype=torch.float64)
    s = ac * cov + (1 - ac) * eye
    return float((eye - (1 - ac) * torch.linalg.inv(s)).trace()) / D


def test_sit_flow_convention_runs_the_other_way_with_the_opposite_target():
    """SiT: x_t = t·x + (1 − t)·ε (t = 0 noise), target u = x − ε, the raw t; the loss at the
    exact SiT velocity is the analytic minimum (the ``flow`` one at 1 − t)."""
    x0, noise, t = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE), torch.tensor([0.25, 0.0])
    got = {}

    def model(x, tt, y):
        got.update(x=x, t=tt)
        return x0 - noise

    loss = flow_loss_terms(model, x0, None, t, noise, "flow-sit")
    assert torch.allclose(got["x"][0], 0.25 * x0[0] + 0.75 * noise[0])
    assert torch.equal(got["x"][1], noise[1]) and torch.equal(got["t"], t)
    assert float(loss.abs().max()) == 0.0
    assert torch.equal(flow_interpolate(x0, noise, 1 - t, "flow"),
                       flow_interpolate(x0, noise, t, "flow-sit"))
    mu, cov = random_law(D, 0)
    n = 4000
    exact = gaussian_model(mu, cov, "flow-sit")
    xs, eps = _data(n, mu, cov, 14), torch.randn(n, *SHAPE)
    for tt in (0.1, 0.7):
        mse = flow_loss_terms(exact, xs, None, torch.full((n,), tt), eps, "flow-sit").double()
        assert abs(float(mse.mean()) - min_mse(mu, cov, 1 - tt, "flow")) < 4 * float(
            mse.std()) / math.sqrt(n) + 1e-6
    with pytest.raises(InputError, match="flow, flow-sit"):
        flow_loss(exact, xs, None, generator=None, objective="sit")


def test_recipes_carry_their_release_objective_schedule_and_sampler():
    """uvit: DC-AE's U-ViT on scaled-linear with dpm++s 30 (order 3, fast, time-uniform),
    guidance 1.5; usit: the DC-AE README's USiT (AdamW lr 1e-4, wd 0, flow-sit, dopri5 250,
    guidance 1.2); dit unchanged (ddpm on linear, DDPM 250). Flags still win."""
    from latentae.diffusion.config import make_diffusion_config
    from latentae.diffusion.recipes import RECIPES

    base = {"autoencoder": "ae", "data": "d"}
    uvit = make_diffusion_config({**base, "model": "uvit-s"})
    assert (uvit.recipe, uvit.objective, uvit.schedule) == ("uvit", "ddpm", "scaled-linear")
    r = RECIPES["uvit"]
    assert (r.sampler, r.sample_steps, r.guidance) == ("dpm++s", 30, 1.5)
    usit = make_diffusion_config({**base, "model": "uvit-s", "recipe": "usit"})
    assert (usit.objective, usit.lr, usit.weight_decay, usit.learn_sigma) == (
        "flow-sit", 1e-4, 0.0, False)
    assert usit.grid_sampler == "heun"
    r = RECIPES["usit"]
    assert (r.sampler, r.sample_steps, r.guidance, r.betas) == ("dopri5", 250, 1.2, (0.99, 0.99))
    dit = make_diffusion_config({**base, "model": "dit-s"})
    assert (dit.objective, dit.schedule, RECIPES["dit"].sampler) == ("ddpm", "linear", "ddpm")
    mine = make_diffusion_config({**base, "model": "uvit-s", "schedule": "cosine+zero-snr"})
    assert mine.schedule == "cosine+zero-snr"
    with pytest.raises(InputError, match="scaled-linear"):
        make_diffusion_config({**base, "model": "dit-s", "schedule": "sigmoid"})


def test_run_records_name_their_schedule_and_old_ones_load_as_linear(tmp_path):
    import json

    from latentae.diffusion.data import LatentNorm
    from latentae.diffusion.pipeline import RunInfo

    info = RunInfo(autoencoder="ae", autoencoder_path="", autoencoder_random_init=True,
                   objective="ddpm", learn_sigma=True,
                   latent_norm=LatentNorm("model", (0.0,) * 4, (1.0,) * 4), resolution=64,
                   latent_size=8, latent_channels=4, num_classes=0, classes=(),
                   sampler="dpm++s", sample_steps=30, guidance=1.0, schedule="scaled-linear")
    path = tmp_path / "diffusion_run.json"
    path.write_text(info.to_json())
    assert RunInfo.read(path) == info and json.loads(path.read_text())["schedule"] == (
        "scaled-linear")
    old = json.loads(info.to_json())
    del old["schedule"]  # a record from before schedules were data
    path.write_text(json.dumps(old))
    assert RunInfo.read(path).schedule == "linear"
    del old["objective"]
    path.write_text(json.dumps(old))
    with pytest.raises(InputError, match="objective"):
        RunInfo.read(path)


def test_model_call_feeds_sit_raw_t_and_ours_999_t():
    """The network sees 999·t for ``flow`` (ours) and the raw t for ``flow-sit`` (SiT), the
    schedule's own timesteps for ``ddpm``."""
    from latentae.diffusion.pipeline import model_call

    class Recorder(torch.nn.Module):
        def forward(self, x, t, labels):
            self.t = t
            return x

    net, t = Recorder(), torch.tensor([0.25, 1.0])
    for objective, want in (("flow", t * 999), ("flow-sit", t), ("ddpm", t)):
        model_call(net, objective, torch.device("cpu"))(torch.zeros(2, 1), t, None)
        assert torch.equal(net.t, want), objective
