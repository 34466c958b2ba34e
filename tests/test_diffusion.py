"""Diffusion math on cases with known answers: schedules, parameterizations, and samplers with an exact denoiser."""

import math

import pytest
import torch

from diffaug.diffusion import objectives, samplers, schedules

TS = torch.linspace(0, 1, 101, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_schedules_decrease_from_clean_to_noise(name):
    logsnr = schedules.get_schedule(name)(TS)
    assert torch.all(logsnr[1:] < logsnr[:-1])
    alpha, sigma = schedules.alpha_sigma(logsnr)
    assert torch.allclose(alpha ** 2 + sigma ** 2, torch.ones_like(alpha))   # variance preserving
    assert alpha[0] > 0.999 and sigma[-1] > 0.99


def test_cosine_is_the_cosine_schedule():
    alpha, _ = schedules.alpha_sigma(schedules.logsnr_cosine(torch.tensor([0.5], dtype=torch.float64)))
    assert float(alpha) == pytest.approx(math.cos(math.pi / 4), abs=1e-6)


@pytest.mark.parametrize("prediction", objectives.PREDICTIONS)
def test_targets_invert_to_the_clean_image(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, 4, 4, generator=g), torch.randn(6, 2, 4, 4, generator=g)
    logsnr = torch.linspace(-6, 6, 6)
    alpha, sigma = schedules.alpha_sigma(logsnr)
    z = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
    out = objectives.target(x0, eps, logsnr, prediction)
    assert torch.allclose(objectives.to_x0(out, z, logsnr, prediction), x0, atol=1e-4)


def test_min_snr_weights_equal_the_x0_weight():
    logsnr = torch.linspace(-8, 8, 9)
    snr = logsnr.exp()
    # the x0-space weight min(SNR, 5) expressed per target: eps error = SNR * x0 error, v error = (SNR+1) * x0 error
    assert torch.allclose(objectives.min_snr_weight(logsnr, "v") * (snr + 1), snr.clamp(max=5), rtol=1e-5)
    assert torch.allclose(objectives.min_snr_weight(logsnr, "eps") * snr, snr.clamp(max=5), rtol=1e-5)
    assert torch.all(objectives.min_snr_weight(logsnr, "v", gamma=None) == 1)


def test_label_dropout_rate_and_seed():
    labels = torch.zeros(20000, dtype=torch.long)
    out = objectives.drop_labels(labels, 10, 0.1, torch.Generator().manual_seed(0))
    assert abs((out == 10).float().mean().item() - 0.1) < 0.01
    assert torch.equal(out, objectives.drop_labels(labels, 10, 0.1, torch.Generator().manual_seed(0)))


def gaussian_denoiser(mu, s, schedule):
    """The exact E[x0 | z_t] for data ~ N(mu, s^2) under a VP process."""
    def denoise(z, t):
        alpha, sigma = (float(a) for a in schedules.alpha_sigma(schedule(t.reshape(1).double())))
        return mu + alpha * s ** 2 / (alpha ** 2 * s ** 2 + sigma ** 2) * (z - alpha * mu)
    return denoise


@pytest.mark.parametrize("name, steps, tol", [("dpmpp_2m", 20, 0.03), ("ddim", 50, 0.03), ("ddpm", 200, 0.04)])
def test_samplers_recover_a_gaussian(name, steps, tol):
    mu, s = 0.3, 0.5
    schedule = schedules.logsnr_cosine
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40000, 1, generator=g, dtype=torch.float64)
    out = samplers.get_sampler(name)(gaussian_denoiser(mu, s, schedule), x, schedules.timesteps(steps), schedule,
                                     generator=g)
    assert abs(out.mean().item() - mu) < tol and abs(out.std().item() - s) < tol


def test_samplers_are_deterministic_given_a_seed():
    schedule = schedules.logsnr_cosine
    den = gaussian_denoiser(0.0, 1.0, schedule)
    run = lambda seed: samplers.sample_ddpm(den, torch.zeros(5, 3), schedules.timesteps(10), schedule,
                                            generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_sdedit_from_a_partial_start_keeps_the_point():
    """Starting at t0 < 1 from a clean point noised to t0, a point-mass data distribution stays put."""
    schedule = schedules.logsnr_cosine
    point = torch.full((8, 2), 0.7)
    t0 = 0.4
    alpha, sigma = (float(a) for a in schedules.alpha_sigma(schedule(torch.tensor([t0], dtype=torch.float64))))
    z = alpha * point + sigma * torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    out = samplers.sample_dpmpp_2m(lambda z, t: point, z, schedules.timesteps(8, t0), schedule)
    assert torch.allclose(out, point, atol=4e-3)   # sigma(t=0) ~ 5e-4 of noise remains: well under one uint8 level


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.get_sampler("euler")
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.get_schedule("quadratic")
    with pytest.raises(ValueError, match="at least 1"):
        schedules.timesteps(0)


# --- issue 37: how the noise levels are drawn ---------------------------------------------------------------------

def _drawn(sampling, n=200_000):
    loss = objectives.DiffusionLoss(schedules.logsnr_cosine, "v", 5.0, sampling)
    u = (torch.rand(()) + torch.arange(n) / n) % 1.0   # stratified, as the loss draws them
    return loss, loss.draw_t(u)


def test_importance_sampling_is_the_weighted_objective_with_the_weight_moved_into_the_draw():
    """E over the drawn t of scale x f(t) equals E over uniform t of min-SNR weight x f(t), for any error f: the
    same objective. The drawn t follow the weight's density, bin by bin."""
    loss, t = _drawn("importance")
    uniform = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:-1] + 0.5 / 200_000
    w = objectives.min_snr_weight(schedules.logsnr_cosine(uniform), "v", 5.0)
    for f in (lambda x: x, lambda x: (3 * x).sin() ** 2, lambda x: torch.ones_like(x)):
        assert float(loss.scale * f(t.double()).mean()) == pytest.approx(float((w * f(uniform)).mean()), rel=2e-3)
    expected = torch.stack([w[(uniform >= b / 10) & (uniform < (b + 1) / 10)].sum() for b in range(10)])
    counts = torch.histc(t.double(), bins=10, min=0, max=1)
    assert torch.allclose(counts / counts.sum(), expected / expected.sum(), atol=2e-3)
    assert t.min() >= 0 and t.max() <= 1


def test_lognormal_sampling_draws_edms_noise_levels():
    loss, t = _drawn("lognormal")
    logsnr = schedules.logsnr_cosine(t.double())
    mean, sd = objectives.LOGNORMAL_LOGSNR
    assert float(logsnr.mean()) == pytest.approx(mean, abs=0.05) and float(logsnr.std()) == pytest.approx(sd, abs=0.05)
    # far more of the batch below EDM's sigma 0.2 (logSNR above 2 ln 5) than uniform t puts there
    assert float((logsnr > 2 * math.log(5)).float().mean()) > 2 * float((schedules.logsnr_cosine(
        torch.rand(100_000, dtype=torch.float64)) > 2 * math.log(5)).float().mean())
    assert torch.equal(loss.weight(logsnr[:5]), torch.ones(5, dtype=logsnr.dtype))


def test_the_default_draws_uniform_t_and_weights_by_min_snr_and_a_bad_name_is_refused():
    from diffaug import TrainConfig
    from diffaug.errors import DiffaugError
    loss = objectives.DiffusionLoss(schedules.logsnr_cosine)
    u = torch.rand(1000)
    assert loss.draw_t(u) is u
    logsnr = schedules.logsnr_cosine(torch.linspace(0.1, 0.9, 5))
    assert torch.equal(loss.weight(logsnr), objectives.min_snr_weight(logsnr, "v", 5.0))
    assert TrainConfig().noise_sampling == "weighted"
    with pytest.raises(DiffaugError, match="noise sampling 'edm'"):
        TrainConfig(noise_sampling="edm")
