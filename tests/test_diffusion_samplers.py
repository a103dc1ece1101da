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

from latentae.diffusion import (
    ddpm_sampling_schedule,
    ddpm_solvers,
    get_schedule,
    guided_model,
    sample,
    samplers,
)
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


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_steps_match_diffusers_on_ddim_spacing(eta):
    """ADM's "ddim50" spacing (0, 20, …, 980) is diffusers' DDIMScheduler "leading" spacing, where
    its fixed offset t − 1000/50 is the previous kept step, so the steps compare; with η > 0
    diffusers is given our noise of each step (``variance_noise``; none at the last, σ = 0)."""
    shape, ours = (3, 2, 4, 4), []
    x_t = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    denoise = guided_model(_recording(_fake_eps, ours), None, guidance=1.0, null_label=None,
                           channels=2)
    opts = SamplerOptions(get_schedule("linear"), eta=eta)
    out = samplers._RUNNERS["ddim"](denoise, x_t.clone(), "ddim50", opts, learn_sigma=False,
                                    generator=torch.Generator().manual_seed(4), progress=False)
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(4)
    x, theirs = x_t.clone(), []
    for i, t in enumerate(sched.timesteps):
        theirs.append(x.clone())
        z = torch.randn(shape, generator=g) if eta > 0 and i < 49 else torch.zeros(shape)
        x = sched.step(_fake_eps(x, t.expand(shape[0]), None), t, x, eta=eta,
                       variance_noise=z).prev_sample
    # measured: 3.0e-6 per step, 2.7e-6 at the end at η = 0, ≤ 2.4e-6 at η = 1
    assert _max_step_diff(ours, theirs) <= 1e-5
    assert float((out - x).abs().max()) <= 1e-5


def _fake_eps_cont(x, t, labels):
    """_fake_eps at a continuous model time that falls on an integer step (dpm++s grids)."""
    k = t.double().round().long()
    assert float((t.double() - k).abs().max()) < 1e-6
    return _fake_eps(x, k, labels)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("order, ours_type, their_type", [(3, "taylor", "heun"),
                                                          (2, "dpmsolver", "midpoint")])
def test_dpm_solver_singlestep_matches_diffusers_on_a_shared_grid(order, ours_type, their_type):
    """27 model calls on the time-uniform grid 1 → 1/N hit the integer steps 999, 962, …, 37, 0:
    diffusers' DPMSolverSinglestepScheduler on those timesteps (sigma_min last, its orders
    [1, 2, 3]·8 + [1, 2] + [1] = our fast pattern [3]·8 + [2, 1]) takes the same steps.
    Its "heun" third order is DPM-Solver's "taylor"; its order-2 "midpoint" is "dpmsolver".
    (DC-AE's default, "dpmsolver" at order 3, mixes the two; the Gaussian test covers it.)"""
    shape = (3, 2, 4, 4)
    out = sample(_fake_eps_cont, shape, objective="ddpm", sampler="dpm++s", steps=27,
                 order=order, solver_type=ours_type, generator=torch.Generator().manual_seed(1))
    sched = diffusers.DPMSolverSinglestepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        solver_order=order, algorithm_type="dpmsolver++", solver_type=their_type,
        lower_order_final=True, final_sigmas_type="sigma_min")
    sched.set_timesteps(timesteps=[999 - 37 * j for j in range(27)])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for t in sched.timesteps:
        x = sched.step(_fake_eps(x, t.expand(shape[0]), None), t, x).prev_sample
    assert float((out - x).abs().max()) <= 1e-5  # measured 2.1e-6 (order 3), 1.1e-6 (order 2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_3m_steps_match_diffusers(steps):
    """Order 3 multistep; 10 steps also checks diffusers' lower_order_second (< 15 steps)."""
    shape, ours = (3, 2, 4, 4), []
    out = sample(_recording(_fake_eps, ours), shape, objective="ddpm", sampler="dpm++3m",
                 steps=steps, generator=torch.Generator().manual_seed(1))
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=3,
        lower_order_final=True, timestep_spacing="linspace")
    sched.set_timesteps(steps)
    x, theirs = torch.randn(shape, generator=torch.Generator().manual_seed(1)), []
    for t in sched.timesteps:
        theirs.append(x.clone())
        x = sched.step(_fake_eps(x, t.expand(shape[0]), None), t, x).prev_sample
    assert _max_step_diff(ours, theirs) <= 1e-5  # measured ≤ 2e-6
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


def _exact_law_error(objective, sampler, steps, schedule=None, **options):
    """Max-abs error of the mean and covariance of a deterministic sampler's output law.

    The output is affine in x_T (fitted exactly from 32 draws: out = A z + b); the law pushed
    forward is the true one at the start (ddpm: N(α_T μ, α_T²Σ + σ_T²I) at the schedule's
    last step, not N(0, I)), compared with the true one at the end (dpm++s stops at t = 1/N,
    step 0, as the release: N(α_0 μ, α_0²Σ + σ_0²I)); so only the solver's error remains."""
    mu, cov = random_law(D, 0)
    n, eye = 32, torch.eye(D, dtype=torch.float64)
    ns = get_schedule(schedule) if objective == "ddpm" else None
    x = sample(gaussian_model(mu, cov, objective, schedule=ns), (n, *SHAPE),
               objective=objective, sampler=sampler, steps=steps, schedule=schedule,
               generator=torch.Generator().manual_seed(5), **options)
    z = torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(5))  # the same x_T
    design = torch.cat([z.reshape(n, -1).double(), torch.ones(n, 1, dtype=torch.float64)], 1)
    fit = torch.linalg.lstsq(design, x.reshape(n, -1).double()).solution
    a, b = fit[:-1].T, fit[-1]
    start, end = (0.0, 1.0), (1.0, 1.0)  # (ᾱ at the start, ᾱ at the end)
    if objective == "ddpm":
        ac = ns.sampling_alphas_cumprod()
        start = (float(ac[-1]), 1.0)
        end = (float(ac[0]), 1.0) if sampler == "dpm++s" else end
    s_mean, s_cov = start[0] ** 0.5 * mu, start[0] * cov + (1 - start[0]) * eye
    e_mean, e_cov = end[0] ** 0.5 * mu, end[0] * cov + (1 - end[0]) * eye
    return (float((a @ s_mean + b - e_mean).abs().max()),
            float((a @ s_cov @ a.T - e_cov).abs().max()))


def test_second_order_solvers_beat_first_order_at_equal_steps():
    # measured cov errors: ddim 30 0.16, dpm++2m 30 0.012; euler 50 0.077, heun 50 1.7e-4
    assert _exact_law_error("ddpm", "dpm++2m", 30)[1] < _exact_law_error("ddpm", "ddim", 30)[1] / 5
    assert _exact_law_error("flow", "heun", 50)[1] < _exact_law_error("flow", "euler", 50)[1] / 50


# (objective, sampler, steps, schedule, options): (mean bound, covariance bound); measured
# (mean / cov): dpm++s 30 scaled-linear time_uniform 2e-7 / 0.023 (DC-AE's U-ViT setting),
# logSNR 6e-4, time_quadratic 1.4e-3, order 2 0.014, order 1 0.12; linear 0.015; cosine
# 0.011; dpm++3m 30 linear 0.018, scaled-linear 0.031; ddim 250 scaled-linear 0.016;
# dpm++2m 30 linear+zero-snr 0.011; dopri5 50 both conventions 1e-7 / 0.0021 (rtol 1e-3);
# heun 50 flow-sit 1.7e-4; euler 50 flow-sit 0.077 (the same as flow).
EXACT_CASES = {
    ("ddpm", "dpm++s", 30, "scaled-linear", ()): (1e-4, 0.035),
    ("ddpm", "dpm++s", 30, "scaled-linear", (("grid", "logSNR"),)): (1e-4, 0.002),
    ("ddpm", "dpm++s", 30, "scaled-linear", (("grid", "time_quadratic"),)): (1e-4, 0.003),
    ("ddpm", "dpm++s", 30, "linear", ()): (1e-4, 0.025),
    ("ddpm", "dpm++s", 30, "cosine", ()): (1e-4, 0.02),
    ("ddpm", "dpm++3m", 30, "linear", ()): (1e-5, 0.025),
    ("ddpm", "dpm++3m", 30, "scaled-linear", ()): (1e-5, 0.045),
    ("ddpm", "ddim", 250, "scaled-linear", ()): (1e-5, 0.025),
    ("ddpm", "dpm++2m", 30, "linear+zero-snr", ()): (1e-5, 0.02),
    ("flow", "dopri5", 50, None, ()): (1e-5, 0.004),
    ("flow-sit", "dopri5", 50, None, ()): (1e-5, 0.004),
    ("flow-sit", "heun", 50, None, ()): (1e-5, 5e-4),
    ("flow-sit", "euler", 50, None, ()): (1e-5, 0.1),
}


@pytest.mark.parametrize("case", list(EXACT_CASES), ids=lambda c: "-".join(
    [c[0], c[1] + str(c[2]), str(c[3] or "")] + [str(v) for _, v in c[4]]))
def test_deterministic_sampler_output_law_is_the_data_law(case):
    objective, sampler, steps, schedule, options = case
    mean_err, cov_err = _exact_law_error(objective, sampler, steps, schedule, **dict(options))
    bound_mean, bound_cov = EXACT_CASES[case]
    assert mean_err <= bound_mean and cov_err <= bound_cov, (mean_err, cov_err)


def test_higher_dpm_solver_orders_and_log_snr_grids_are_more_accurate():
    # measured cov errors (30 calls, scaled-linear): order 1 0.12, 2 0.014, 3 0.023 (time-uniform
    # starves the high-SNR end, where order 3 has the fewest updates); logSNR grid 6e-4
    err = {o: _exact_law_error("ddpm", "dpm++s", 30, "scaled-linear", order=o)[1]
           for o in (1, 2, 3)}
    assert err[2] < err[1] / 5 and err[3] < err[1] / 4
    assert _exact_law_error("ddpm", "dpm++s", 30, "scaled-linear", grid="logSNR")[1] < err[3] / 10


def test_dpm_solver_fast_pattern_and_grids_are_the_releases():
    """DC-AE's 30 steps: orders [3]·9 + [2, 1] (issue 24); the grids of efficientvit's
    ``get_time_steps`` (time_quadratic read off its 10⁷-point table, here recomputed)."""
    assert samplers.dpm_solver_orders(30, 3) == [3] * 9 + [2, 1]
    assert samplers.dpm_solver_orders(31, 3) == [3] * 10 + [1]
    assert samplers.dpm_solver_orders(32, 3) == [3] * 10 + [2]
    assert samplers.dpm_solver_orders(7, 2) == [2, 2, 2, 1]
    ns = get_schedule("scaled-linear")
    uni = samplers.dpm_solver_grid(ns, "time_uniform", 30)
    assert torch.allclose(uni, torch.linspace(1.0, 1e-3, 31, dtype=torch.float64))
    lam = ns.lambda_(samplers.dpm_solver_grid(ns, "logSNR", 30))
    assert float((lam.diff() - lam.diff().mean()).abs().max()) < 1e-9
    t = torch.linspace(1e-3, 1.0, 10_000_000)  # the release's lookup, float32
    q = torch.linspace(float(t[0].sqrt()), float(t[-1].sqrt()), 31)
    table = torch.cat([t[torch.searchsorted(t.sqrt(), q)[:-1]], torch.ones(1)]).flip(0)
    ours = samplers.dpm_solver_grid(ns, "time_quadratic", 30)
    assert float((ours - table.double()).abs().max()) < 3e-7


def test_dpm_solver_singlestep_feeds_uvit_t_times_n_and_ends_at_one_over_n():
    seen = []

    def model_fn(x, t, labels):
        seen.append(t.clone())
        return torch.zeros_like(x)

    sample(model_fn, (2, *SHAPE), objective="ddpm", sampler="dpm++s", steps=30,
           schedule="scaled-linear")
    assert len(seen) == 30 and seen[0].dtype == torch.float32
    assert float(seen[0][0]) == 1000.0  # t = T = 1, network sees t·N
    assert abs(float(seen[1][0]) - (1000 - 999 / 30)) < 1e-3  # the next grid point
    assert abs(float(seen[-1][0]) - (1 + 999 / 30)) < 1e-3  # last call one step above 1/N


def test_ddim_eta_one_is_ddpm_ancestral_sampling():
    """DDIM's σ at η = 1 is DDPM's β̃ (Song et al. 2021 §4.1): the same draws, the same path."""
    mu, cov = random_law(D, 0)
    model = gaussian_model(mu, cov, "ddpm", schedule=get_schedule("scaled-linear"))
    kw = dict(objective="ddpm", steps=50, schedule="scaled-linear")
    ddim = sample(model, (64, *SHAPE), sampler="ddim", eta=1.0,
                  generator=torch.Generator().manual_seed(3), **kw)
    ddpm = sample(model, (64, *SHAPE), sampler="ddpm", generator=torch.Generator().manual_seed(3),
                  **kw)
    assert float((ddim - ddpm).abs().max()) < 1e-5


def test_flow_conventions_mirror_under_euler_maruyama():
    """The same noise through a flow model and its SiT mirror gives the same samples."""
    mu, cov = random_law(D, 0)
    out = {o: sample(gaussian_model(mu, cov, o), (64, *SHAPE), objective=o,
                     sampler="euler-maruyama", steps=100,
                     generator=torch.Generator().manual_seed(8)) for o in ("flow", "flow-sit")}
    assert float((out["flow"] - out["flow-sit"]).abs().max()) < 1e-4


def test_dopri5_is_torchdiffeq_in_each_convention_and_mirrors_between_them():
    """dopri5 = torchdiffeq.odeint(method="dopri5") from the noise end to the data end; a
    flow model and its SiT mirror (t → 1 − t, v → −v) give the same samples."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    mu, cov = random_law(D, 0)
    sit = gaussian_model(mu, cov, "flow-sit")
    x_T = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(6))
    ours = sample(sit, x_T.shape, objective="flow-sit", sampler="dopri5", steps=50, noise=x_T)
    ref = torchdiffeq.odeint(lambda t, x: sit(x, t.expand(4), None), x_T,
                             torch.linspace(0.0, 1.0, 50), method="dopri5", atol=1e-6,
                             rtol=1e-3)[-1]
    assert torch.equal(ours, ref)
    flow = gaussian_model(mu, cov, "flow")
    mirrored = sample(flow, x_T.shape, objective="flow", sampler="dopri5", steps=50, noise=x_T)
    assert float((mirrored - ours).abs().max()) < 1e-4  # two adaptive runs, tolerance 1e-3


# measured (max |mean − μ| / max |cov − Σ|, MC sd ≈ 0.027 / 0.047): euler-maruyama 250 both
# conventions 0.029 / 0.040 (the same draws: the conventions mirror); ddim η = 1 and ddpm 100
# on scaled-linear 0.015 / 0.065.
STOCHASTIC_CASES = {  # (objective, sampler, steps, schedule, options): bounds as CASES
    ("flow-sit", "euler-maruyama", 250, None, ()): (0.01, 0.04),
    ("flow", "euler-maruyama", 250, None, ()): (0.01, 0.04),
    ("ddpm", "ddim", 100, "scaled-linear", (("eta", 1.0),)): (0.01, 0.05),
    ("ddpm", "ddpm", 100, "scaled-linear", ()): (0.01, 0.08),
}


@pytest.mark.parametrize("case", list(STOCHASTIC_CASES), ids=lambda c: "-".join(
    [c[0], c[1] + str(c[2]), str(c[3] or "")] + [str(v) for _, v in c[4]]))
def test_stochastic_sampler_reproduces_gaussian_mean_and_covariance(case):
    """2,000 samples within 4 sd of N(μ, Σ) plus the discretisation bias (scaled-linear:
    plus the x_T ~ N(0, I) start, |α_T·μ| ≤ 0.06)."""
    objective, sampler, steps, schedule, options = case
    mu, cov = random_law(D, 0)
    ns = get_schedule(schedule) if objective == "ddpm" else None
    x = sample(gaussian_model(mu, cov, objective, schedule=ns), (N, *SHAPE),
               objective=objective, sampler=sampler, steps=steps, schedule=schedule,
               generator=torch.Generator().manual_seed(1), **dict(options))
    mean, c = _moments(x)
    var = cov.diagonal()
    bias_mean, bias_cov = STOCHASTIC_CASES[case]
    if schedule == "scaled-linear":
        bias_mean += float(ns.alphas_cumprod[-1].sqrt()) * float(mu.abs().max())
    sd_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((mean - mu).abs() <= 4 * (var / N).sqrt() + bias_mean).all(), (mean - mu).abs().max()
    assert ((c - cov).abs() <= 4 * sd_cov + bias_cov).all(), (c - cov).abs().max()


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


def _dit_release_forward_with_cfg(model_fn, x, t, y, cfg_scale):
    """The DiT release's ``forward_with_cfg`` arithmetic, restated: the first half of the
    doubled batch is run twice (labels y = [cond; null]), channels 0–2 guided, the rest as
    the model returned them per half."""
    half = x[: len(x) // 2]
    out = model_fn(torch.cat([half, half]), t, y)
    guided, rest = out[:, :3], out[:, 3:]
    cond, uncond = torch.split(guided, len(guided) // 2, dim=0)
    mixed = uncond + cfg_scale * (cond - uncond)
    return torch.cat([torch.cat([mixed, mixed]), rest], dim=1)


def test_three_channel_guidance_is_the_dit_release_arithmetic():
    """guidance_channels=3 equals DiT's forward_with_cfg on the kept (conditional) half, for
    a learned-sigma output (B, 8, …): ε channel 3 and v come from the conditional call."""
    def model_fn(x, t, labels):
        lab = labels.view(-1, 1, 1, 1).to(x.dtype)
        return torch.cat([torch.sin(x * (1 + lab)) + lab, torch.cos(x - lab)], dim=1)

    x, labels = torch.randn(3, 4, 2, 2), torch.tensor([0, 2, 1])
    t = torch.full((3,), 500)
    null = torch.full_like(labels, 5)
    want = _dit_release_forward_with_cfg(model_fn, torch.cat([x, x]), torch.cat([t, t]),
                                         torch.cat([labels, null]), 4.0)[:3]
    got = guided_model(model_fn, labels, guidance=4.0, null_label=5, channels=3)(x, t)
    assert torch.equal(got, want)
    every = guided_model(model_fn, labels, guidance=4.0, null_label=5, channels=4)(x, t)
    assert not torch.equal(every[:, 3], got[:, 3]) and torch.equal(every[:, :3], got[:, :3])
    mu, cov = random_law(D, 0)  # through sample(): channel 1 of 2 guided only
    model = mixture_model([mu, -mu], [cov, cov], "ddpm")
    kw = dict(objective="ddpm", sampler="ddim", steps=10, guidance=3.0, null_label=2,
              labels=torch.zeros(4, dtype=torch.int64))
    one = sample(model, (4, *SHAPE), guidance_channels=1,
                 generator=torch.Generator().manual_seed(1), **kw)
    both = sample(model, (4, *SHAPE), generator=torch.Generator().manual_seed(1), **kw)
    assert not torch.equal(one, both)


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


def test_progress_bar_shows_only_when_asked(capsys, monkeypatch):
    import latentae.progress
    monkeypatch.setattr(latentae.progress, "LOG_SECONDS", 0)  # a log: one line per redraw
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
    (dict(objective="ddpm", sampler="ddim", steps=5, eta=2.0), ["eta must be in [0, 1]"]),
    (dict(objective="ddpm", sampler="dpm++s", steps=5, order=4), ["1, 2 or 3"]),
    (dict(objective="ddpm", sampler="dpm++s", steps=5, grid="karras"), ["time_uniform, logSNR"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, order_of=2), ["unknown sampler option"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, schedule="sigmoid"), ["scaled-linear"]),
    (dict(objective="flow-sit", sampler="euler-maruyama", steps=1), ["2 … any"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, guidance_channels=3), ["1 … 2"]),
    (dict(objective="ddpm", sampler="ddim", steps=5, noise=torch.zeros(3, 2, 2, 2)),
     ["noise has shape"]),
])
def test_bad_sampling_arguments_raise_input_error(kwargs, words):
    with pytest.raises(InputError) as err:
        sample(_zeros, (2, *SHAPE), **kwargs)
    for word in words:
        assert word in str(err.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dc_ae_third_order_final_formula_is_diffusers_midpoint_given_the_same_predictions():
    """DC-AE's default ("dpmsolver") third-order update ends with diffusers' "midpoint" third
    order (the D1_1 term): given the same x̂_0 at the three inner times, the same x_t. (Its
    intermediate points differ from diffusers' midpoint ones; see the test above.)"""
    ns = get_schedule("linear")
    steps = [999, 962, 925, 888]
    times = torch.tensor([(k + 1) / 1000 for k in steps], dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    x, preds = torch.randn(2, 2, 3, 3, generator=g), [torch.randn(2, 2, 3, 3, generator=g)
                                                       for _ in range(3)]
    served = iter(preds)
    ours = ddpm_solvers._singlestep_update(x, times, ns, lambda *a: next(served), "dpmsolver")
    sched = diffusers.DPMSolverSinglestepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        solver_order=3, algorithm_type="dpmsolver++", solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="sigma_min")
    sched.set_timesteps(timesteps=steps)
    sched._step_index = 2  # the update from sigmas[0] (999) to sigmas[3] (888)
    theirs = sched.singlestep_dpm_solver_third_order_update(preds, sample=x)
    assert float((ours - theirs).abs().max()) < 1e-5
