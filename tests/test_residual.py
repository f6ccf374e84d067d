"""Residual-error distributions (pkpd.stats.residual) against SciPy, censoring (M3/M4), sampling, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pkpd.errors import ModelError
from pkpd.stats.residual import (CensoredResidual, LogAdditiveNormal, ResidualNormal, residual_distribution)

F = np.array([0.3, 1.0, 2.5, 6.0, 0.05])       # predictions
Y = np.array([0.2, 1.4, 2.0, 9.0, 0.07])       # observations
LLOQ = np.array([0.5, 0.5, 3.0, 1.0, 0.1])
CENS = np.array([True, False, True, False, True])
SIGMA = {"log_additive": {"sigma": 0.3}, "proportional": {"sigma": 0.2}, "additive": {"sigma": 0.4},
         "combined": {"sigma_add": 0.1, "sigma_prop": 0.25}}


def _sd(kind, f):
    s = SIGMA[kind]
    return {"proportional": lambda: s["sigma"] * f, "additive": lambda: np.full_like(f, s["sigma"]),
            "combined": lambda: np.sqrt(s["sigma_add"] ** 2 + (s["sigma_prop"] * f) ** 2)}[kind]()


def reference(kind, censoring):
    """The likelihood written out with SciPy (the numbers pkpd fits have always used)."""
    if kind == "log_additive":
        s = SIGMA[kind]["sigma"]
        dens = stats.norm.logpdf(np.log(Y), np.log(F), s)      # density of log y: no Jacobian
        cens = stats.norm.logcdf(np.log(LLOQ), np.log(F), s)    # M4 = M3 on the log scale
    else:
        sd = _sd(kind, F)
        dens = stats.norm.logpdf(Y, F, sd)
        cens = stats.norm.logcdf(LLOQ, F, sd)
        if censoring == "M4":
            p0 = stats.norm.cdf(0.0, F, sd)
            cens = np.log((stats.norm.cdf(LLOQ, F, sd) - p0) / (1 - p0))
    return np.where(CENS, cens, dens)


@pytest.mark.parametrize("censoring", ["M3", "M4"])
@pytest.mark.parametrize("kind", list(SIGMA))
def test_log_prob_matches_scipy_for_uncensored_and_censored_points(kind, censoring):
    d = residual_distribution(kind, jnp.asarray(F), **SIGMA[kind], censored=CENS, lloq=LLOQ, censoring=censoring)
    got = np.asarray(d.log_prob(jnp.asarray(Y)))
    np.testing.assert_allclose(got, reference(kind, censoring), rtol=1e-12, atol=1e-12)
    plain = residual_distribution(kind, jnp.asarray(F), **SIGMA[kind])
    np.testing.assert_allclose(np.asarray(plain.log_prob(jnp.asarray(Y)))[~CENS], got[~CENS], rtol=1e-14)
    # M4 differs from M3 only for normal models, and only where P(Y < 0) is not negligible
    # (additive and combined near f = 0; proportional has P(Y < 0) = Phi(-1/sigma) ~ 3e-7).
    m3 = residual_distribution(kind, jnp.asarray(F), **SIGMA[kind], censored=CENS, lloq=LLOQ, censoring="M3")
    gap = np.abs(np.asarray(m3.log_prob(jnp.asarray(Y))) - got)
    if kind == "log_additive" or censoring == "M3":
        assert np.all(gap == 0)
    if censoring == "M4" and kind in ("additive", "combined"):
        assert gap[4] > 1e-3  # f = 0.05, close to 0: a real difference


def test_log_additive_density_is_on_log_y():
    """log_prob is the density of log y = the LogNormal density of y plus log y (the Jacobian left out)."""
    import numpyro.distributions as dist

    d = LogAdditiveNormal(jnp.asarray(F), 0.3)
    lognormal = dist.LogNormal(jnp.log(F), 0.3)
    np.testing.assert_allclose(np.asarray(d.log_prob(Y)), np.asarray(lognormal.log_prob(Y)) + np.log(Y), rtol=1e-12)
    assert abs(float(d.log_prob(Y)[3] - lognormal.log_prob(Y)[3])) > 2.0  # the Jacobian is not negligible here
    np.testing.assert_allclose(np.asarray(d.mean), F * np.exp(0.3**2 / 2), rtol=1e-12)


@pytest.mark.parametrize("kind", list(SIGMA))
def test_samples_follow_the_model(kind):
    """200 000 draws: mean and SD within 5 Monte Carlo standard errors of the model's; censored
    points are sampled uncensored (values below the LLOQ occur)."""
    f = jnp.full((200_000,), 2.0)
    d = residual_distribution(kind, f, **SIGMA[kind], censored=jnp.ones(200_000, bool), lloq=jnp.full(200_000, 1.5))
    y = np.asarray(d.sample(jax.random.PRNGKey(3)))
    n = y.size
    if kind == "log_additive":
        x, mu, sd = np.log(y), np.log(2.0), SIGMA[kind]["sigma"]
    else:
        x, mu, sd = y, 2.0, float(_sd(kind, np.array([2.0]))[0])
    assert abs(x.mean() - mu) < 5 * sd / np.sqrt(n)
    assert abs(x.std() - sd) < 5 * sd / np.sqrt(2 * n)
    assert (y < 1.5).any() and (y > 1.5).any()


def test_failed_points_have_minus_infinity_and_nan_samples():
    failed = np.array([False, True, False, False, True])
    d = residual_distribution("proportional", jnp.asarray(F), 0.2, failed=failed)
    assert isinstance(d, CensoredResidual)
    lp = np.asarray(d.log_prob(jnp.asarray(Y)))
    assert np.all(lp[failed] == -np.inf) and np.all(np.isfinite(lp[~failed]))
    y = np.asarray(d.sample(jax.random.PRNGKey(0)))
    assert np.all(np.isnan(y[failed])) and np.all(np.isfinite(y[~failed]))


@pytest.mark.parametrize("kind", list(SIGMA))
def test_gradients_are_finite_with_censored_zeros_and_masks(kind):
    """Censored points may carry DV = 0 and masked slots any value: no NaN reaches the gradient."""
    y = jnp.asarray(np.where(CENS, 0.0, Y))
    mask = jnp.asarray([True, True, True, False, True])

    def total(f):
        d = residual_distribution(kind, f, **SIGMA[kind], censored=CENS, lloq=LLOQ, censoring="M4")
        return jnp.sum(d.mask(mask).log_prob(y))

    value, grad = jax.value_and_grad(total)(jnp.asarray(F))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert float(grad[3]) == 0.0 and np.all(np.asarray(grad)[[0, 1, 2, 4]] != 0)


def test_mask_zeroes_the_log_density():
    d = residual_distribution("additive", jnp.asarray(F), 0.4).mask(jnp.asarray(~CENS))
    lp = np.asarray(d.log_prob(jnp.asarray(Y)))
    assert np.all(lp[CENS] == 0) and np.all(lp[~CENS] != 0)


def test_plain_models_are_normal_distributions():
    assert isinstance(residual_distribution("additive", jnp.asarray(F), 0.4), ResidualNormal)
    assert isinstance(residual_distribution("log_additive", jnp.asarray(F), 0.4), LogAdditiveNormal)
    d = residual_distribution("combined", jnp.asarray(F), sigma_add=0.1, sigma_prop=0.25)
    np.testing.assert_allclose(np.asarray(d.scale), _sd("combined", F), rtol=1e-14)


def test_bad_arguments_are_named():
    with pytest.raises(ModelError, match="kind must be one of"):
        residual_distribution("exponential", F, 0.1)
    with pytest.raises(ModelError, match="censoring must be one of"):
        residual_distribution("additive", F, 0.1, censored=CENS, lloq=LLOQ, censoring="M5")
    with pytest.raises(ModelError, match="'combined' needs `sigma_prop`"):
        residual_distribution("combined", F, sigma_add=0.1)
    with pytest.raises(ModelError, match="'additive' needs `sigma`"):
        residual_distribution("additive", F)
    with pytest.raises(ModelError, match="`lloq` is required"):
        residual_distribution("additive", F, 0.1, censored=CENS)
