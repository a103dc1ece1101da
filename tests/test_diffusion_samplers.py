"""Samplers: step parity with diffusers, the closed-form Gaussian oracle, guidance, bad input.

Spacing: ddpm/ddim keep ADM's ``space_timesteps(1000, str(steps))`` = diffusers
``timestep_spacing="linspace"`` for DDPMScheduler; dpm++2m uses diffusers' ``"linspace"``
for DPMSolverMultistepScheduler (``steps + 1`` points on 0 … 999, the 0 dropped, σ → 0 last).
"""

from __future__ import annotations

import pytest
import torch
from gaussian_oracle import (
    ALPHAS_CUMPROD,
    gaussian_model,
    learned_variance_model,
    mixture_model,
    random_law,
)

from latentae.diffusion import ddpm_sampling_schedule, get_schedule, guided_model, sample, samplers
from latentae.diffusion.sampling import SamplerOptions
from latentae.errors import InputError

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 2, 2)  # C = 2, 2×2 latents: d = 8
D = 8
N = 2000
OPTS = SamplerOptions(get_schedule("linear"))


def _fake_eps(x, t, labels):
    """A deterministic, nonlinear ε-model with bounded x̂_0: σ_t·x + α_t·0.5·tanh(x + cos(t/100))."""
    ac = ALPHAS_CUMPROD[t].to(x.dtype).view(-1, 1, 1, 1)
    tt = t.to(x.dtype).view(-1, 1, 1, 1)
    return (1 - ac).sqrt() * x + ac.sqrt() * 0.5 * torch.tanh(x + torch.cos(tt / 100.0))


def _fake_eps_v(x, t, labels):
    tt = t.to(x.dtype).view(-1, 1, 1, 1)
    return torch.cat([_fake_eps(x, t, labels), torch.sin(x + tt / 300.0)], dim=1)


def _recording(model_fn, inputs):
    def call(x, t, labels):
        inputs.append(x.clone())
        return model_fn(x, t, labels)
    return call


def _max_step_diff(ours, theirs):
    assert len(ours) == len(theirs)
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' numpy 2 `copy` notice
def test_dpm_solver_2m_steps_match_diffusers():
    shape, ours = (3, 2, 4, 4), []
    out = sample(_recording(_fake_eps, ours), shape, objective="ddpm", sampler="dpm++2m",
                 steps=30, generator=torch.Generator().manual_seed(1))
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2,
        lower_order_final=True, timestep_spacing="linspace")
    sched.set_timesteps(30)
    x, theirs = torch.randn(shape, generator=torch.Generator().manual_seed(1)), []
    for t in sched.timesteps:
        theirs.append(x.clone())
        x = sched.step(_fake_eps(x, t.expand(shape[0]), None), t, x).prev_sample
    # measured: 1.9e-6 per step, 1.7e-6 at the end (diffusers' float32 schedule as it is)
    assert _max_step_diff(ours, theirs) <= 1e-5
    assert float((out - x).abs().max()) <= 1e-5


@pytest.mark.parametrize("variance_type, model_fn, learn_sigma", [
    ("fixed_small", _fake_eps, False), ("learned_range", _fake_eps_v, True)])
def test_ddpm_ancestral_steps_match_diffusers(variance_type, model_fn, learn_sigma):
    shape, ours = (3, 2, 4, 4), []
    out = sample(_recording(model_fn, ours), shape, objective="ddpm", sampler="ddpm",
                 steps=250, generator=torch.Generator().manual_seed(2), learn_sigma=learn_sigma)
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        variance_type=variance_type, clip_sample=False, prediction_type="epsilon",
        timestep_spacing="linspace")
    # Diffusers keeps ᾱ in float32 (within 4e-7 relative of ours, checked in
    # test_diffusion_objectives) and forms the respaced β = 1 − ᾱ_t/ᾱ_prev in float32, which
    # cancels to ~3e-4 relative error at small t (2e-5 apart after 250 steps). Given the
    # float64 ᾱ the step formulas are compared on equal terms.
    sched.alphas_cumprod = ALPHAS_CUMPROD.clone()
    sched.set_timesteps(250)
    g = torch.Generator().manual_seed(2)  # x_T first, then the noise of each step, as ours
    x, theirs = torch.randn(shape, generator=g), []
    for t in sched.timesteps:
        theirs.append(x.clone())
        x = sched.step(model_fn(x, t.expand(shape[0]), None), t, x, generator=g).prev_sample
    # measured: ≤ 1.1e-6 per step and at the end
    assert _max_step_diff(ours, theirs) <= 1e-5
    assert float((out - x).abs().max()) <= 1e-5


def test_ddim_steps_match_diffusers_on_ddim_spacing():
    """ADM's "ddim50" spacing (0, 20, …, 980) is diffusers' DDIMScheduler "leading" spacing, where
    its fixed offset t − 1000/50 is the previous kept step, so the η = 0 steps compare."""
    shape, ours = (3, 2, 4, 4), []
    x_t = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    denoise = guided_model(_recording(_fake_eps, ours), None, guidance=1.0, null_label=None,
                           channels=2)
    out = samplers._RUNNERS["ddim"](denoise, x_t.clone(), "ddim50", OPTS, learn_sigma=False,
                                    generator=None, progress=False)
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sched.set_timesteps(50)
    x, theirs = x_t.clone(), []
    for t in sched.timesteps:
        theirs.append(x.clone())
        x = sched.step(_fake_eps(x, t.expand(shape[0]), None), t, x, eta=0.0).prev_sample
    # measured: 3.0e-6 per step, 2.7e-6 at the end (diffusers' own float32 schedule)
    assert _max_step_diff(ours, theirs) <= 1e-5
    assert float((out - x).abs().max()) <= 1e-5


# Discretisation error of each sampler on N(μ, Σ) below (max-abs over the mean / covariance
# entries), measured from the exact output law (deterministic samplers: the output is
# affine in x_T, fitted exactly) or with 100,000 samples (ancestral, MC sd ≈ 0.004 / 0.007):
#   ddpm 250 fixed β̃: 0.004 / 0.059 (β̃ is too small at 250 steps); learned exact v:
#   0.005 / 0.007 (no error beyond MC); ddim 250: 0.0026 / 0.020; dpm++2m 30: 0.0026 / 0.012;
#   euler 250: 1e-7 / 0.016; heun 50: 4e-8 / 1.7e-4. (The 0.0026 of ddpm-type samplers is
#   x_T ~ N(0, I) instead of N(α_T μ, ·), α_T = 0.0064.)
CASES = {  # (objective, sampler, steps, learn_sigma): (mean bias bound, covariance bias bound)
    ("ddpm", "ddpm", 250, False): (0.006, 0.08),
    ("ddpm", "ddpm", 250, True): (0.006, 0.01),
    ("ddpm", "ddim", 250, False): (0.004, 0.03),
    ("ddpm", "dpm++2m", 30, False): (0.004, 0.02),
    ("flow", "euler", 250, False): (0.001, 0.025),
    ("flow", "heun", 50, False): (0.001, 0.001),
}


def _moments(x):
    z = x.reshape(x.shape[0], -1).double()
    return z.mean(0), torch.cov(z.T)


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: f"{c[0]}-{c[1]}{c[2]}" + (
    "-learned" if c[3] else ""))
def test_sampler_reproduces_gaussian_mean_and_covariance(case):
    """2,000 samples: |mean − μ| ≤ 4·sd/√n + bias, |cov − Σ| ≤ 4·sd(cov entry) + bias, per entry.

    Learned sigma uses diagonal Σ: the model's variance is per element, so only there is
    the exact optimum (v at Var(x_prev | x_t)) representable; correlated Σ uses β̃."""
    objective, sampler, steps, learn_sigma = case
    mu, cov = random_law(D, 1 if learn_sigma else 0, diagonal=learn_sigma)
    model = (learned_variance_model(mu, cov.diagonal(), ddpm_sampling_schedule(steps))
             if learn_sigma else gaussian_model(mu, cov, objective))
    x = sample(model, (N, *SHAPE), objective=objective, sampler=sampler, steps=steps,
               generator=torch.Generator().manual_seed(1), learn_sigma=learn_sigma)
    mean, c = _moments(x)
    var = cov.diagonal()
    sd_mean = (var / N).sqrt()
    sd_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()  # sd of a sample covariance
    bias_mean, bias_cov = CASES[case]
    assert ((mean - mu).abs() <= 4 * sd_mean + bias_mean).all(), (mean - mu).abs().max()
    assert ((c - cov).abs() <= 4 * sd_cov + bias_cov).all(), (c - cov).abs().max()


def _exact_law_error(objective, sampler, steps):
    """Max-abs error of the mean and covariance of a deterministic sampler's output law."""
    mu, cov = random_law(D, 0)
    n = 32
    x = sample(gaussian_model(mu, cov, objective), (n, *SHAPE), objective=objective,
               sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(5))
    z = torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(5))  # the same x_T
    design = torch.cat([z.reshape(n, -1).double(), torch.ones(n, 1, dtype=torch.float64)], 1)
    fit = torch.linalg.lstsq(design, x.reshape(n, -1).double()).solution  # out = A z + b
    a, b = fit[:-1].T, fit[-1]
    return float((b - mu).abs().max()), float((a @ a.T - cov).abs().max())


def test_second_order_solvers_beat_first_order_at_equal_steps():
    # measured cov errors: ddim 30 0.16, dpm++2m 30 0.012; euler 50 0.077, heun 50 1.7e-4
    assert _exact_law_error("ddpm", "dpm++2m", 30)[1] < _exact_law_error("ddpm", "ddim", 30)[1] / 5
    assert _exact_law_error("flow", "heun", 50)[1] < _exact_law_error("flow", "euler", 50)[1] / 50


def test_guidance_one_equals_the_conditional_sampler():
    mu, cov = random_law(D, 0)
    means, covs = [mu, -mu], [cov, cov]
    labels = torch.tensor([0, 1] * 8)
    for objective, sampler in [("ddpm", "ddpm"), ("flow", "euler")]:
        model = mixture_model(means, covs, objective)
        kw = dict(objective=objective, sampler=sampler, steps=20, labels=labels)
        plain = sample(model, (16, *SHAPE), generator=torch.Generator().manual_seed(3), **kw)
        guided = sample(model, (16, *SHAPE), generator=torch.Generator().manual_seed(3),
                        guidance=1.0, null_label=2, **kw)
        assert torch.equal(plain, guided)
        outside = sample(model, (16, *SHAPE), generator=torch.Generator().manual_seed(3),
                         guidance=4.0, null_label=2, guidance_interval=(2000.0, 3000.0), **kw)
        assert torch.equal(plain, outside)  # guidance only inside the interval: never here


def test_batched_guidance_equals_separate_calls_and_keeps_cond_variance():
    calls = []

    def model_fn(x, t, labels):
        calls.append(labels.clone())
        return torch.cat([x * (1 + labels.view(-1, 1, 1, 1)), -x - labels.view(-1, 1, 1, 1)], 1)

    x, t, labels = torch.randn(4, 2, 2, 2), torch.full((4,), 500), torch.tensor([0, 1, 2, 0])
    out = guided_model(model_fn, labels, guidance=3.0, null_label=5, channels=2)(x, t)
    cond, uncond = model_fn(x, t, labels), model_fn(x, t, torch.full_like(labels, 5))
    want = uncond[:, :2] + 3.0 * (cond[:, :2] - uncond[:, :2])
    assert torch.allclose(out[:, :2], want, atol=1e-6)
    assert torch.equal(out[:, 2:], cond[:, 2:])  # learned-sigma v from the conditional half
    assert calls[0].tolist() == [0, 1, 2, 0, 5, 5, 5, 5]  # one call, cond first


def test_guidance_interval_guides_only_inside():
    seen = []

    def model_fn(x, t, labels):
        seen.append((float(t[0]), x.shape[0]))
        return torch.zeros_like(x)

    sample(model_fn, (3, *SHAPE), objective="flow", sampler="euler", steps=10, guidance=2.0,
           labels=torch.zeros(3, dtype=torch.int64), null_label=1, guidance_interval=(0.2, 0.6))
    for t, batch in seen:
        assert batch == (6 if 0.2 <= t <= 0.6 else 3), (t, batch)


@pytest.mark.parametrize("objective, sampler", [("ddpm", "dpm++2m"), ("flow", "euler")])
def test_guidance_moves_samples_toward_the_class(objective, sampler):
    """Two overlapping classes ±m: guidance 4 pushes class-0 samples along m − (−m) beyond the
    conditional sampler (CFG sharpens p(c | x)), and more of them sit nearer their class
    mean than the other's. A swapped cond/uncond or sign would move them the other way."""
    m = torch.tensor([0.6, 0.3] + [0.0] * 6, dtype=torch.float64)
    cov = 0.5 * torch.eye(D, dtype=torch.float64)
    model = mixture_model([m, -m], [cov, cov], objective)
    labels = torch.zeros(600, dtype=torch.int64)

    def draw(w):
        x = sample(model, (600, *SHAPE), objective=objective, sampler=sampler, steps=30,
                   guidance=w, labels=labels, null_label=2,
                   generator=torch.Generator().manual_seed(4))
        return x.reshape(600, -1).double()

    direction = m / m.norm()
    plain, guided = draw(1.0), draw(4.0)
    assert abs(float(plain.mean(0) @ direction) - float(m.norm())) < 4 * (0.5 / 600) ** 0.5
    assert float(guided.mean(0) @ direction) > float(plain.mean(0) @ direction) + 0.1

    def nearer_own(x):
        return float(((x - m).norm(dim=1) < (x + m).norm(dim=1)).double().mean())

    assert nearer_own(guided) > nearer_own(plain) + 0.05


def test_sampling_is_reproducible_with_a_generator():
    mu, cov = random_law(D, 0)
    model = gaussian_model(mu, cov, "ddpm")
    kw = dict(objective="ddpm", sampler="ddpm", steps=10)
    a = sample(model, (8, *SHAPE), generator=torch.Generator().manual_seed(7), **kw)
    b = sample(model, (8, *SHAPE), generator=torch.Generator().manual_seed(7), **kw)
    c = sample(model, (8, *SHAPE), generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_bar_shows_only_when_asked(capsys):
    for progress in (False, True):
        sample(lambda x, t, y: torch.zeros_like(x), (1, *SHAPE), objective="flow",
               sampler="heun", steps=3, progress=progress)
        err = capsys.readouterr().err
        assert ("0/3" in err and "step" in err) == progress, err


def _zeros(x, t, labels):
    return torch.zeros_like(x)


@pytest.mark.parametrize("kwargs, words", [
    (dict(objective="ddpm", sampler="euler", steps=10), [
        "ddpm: ddpm, ddim, dpm++2m, dpm++3m, dpm++s", "flow: euler, heun, dopri5"]),
    (dict(objective="flow", sampler="ddim", steps=10), ["flow: euler, heun"]),
    (dict(objective="edm", sampler="euler", steps=10), ["ddpm, flow, flow-sit"]),
    (dict(objective="ddpm", sampler="ddpm", steps=0), ["1 … 1000"]),
    (dict(objective="ddpm", sampler="dpm++2m", steps=1000), ["1 … 999"]),
    (dict(objective="flow", sampler="euler", steps=5, learn_sigma=True), ["ddpm objective only"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, guidance=2.0), ["needs class labels"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, guidance=2.0,
          labels=torch.zeros(2, dtype=torch.int64)), ["null_label"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, labels=torch.zeros(2)), ["int64"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, labels=torch.zeros(3, dtype=torch.int64)),
     ["shape (2,)"]),
    (dict(objective="flow", sampler="euler", steps=5, guidance=2.0, null_label=1,
          labels=torch.zeros(2, dtype=torch.int64), guidance_interval=(0.8, 0.2)),
     ["t_lo <= t_hi"]),
    (dict(objective="ddpm", sampler="ddpm", steps=5, learn_sigma=True), ["4 channels"]),
])
def test_bad_sampling_arguments_raise_input_error(kwargs, words):
    with pytest.raises(InputError) as err:
        sample(_zeros, (2, *SHAPE), **kwargs)
    for word in words:
        assert word in str(err.value)
