"""Pareto-smoothed importance sampling (PSIS) checks of approximate posteriors (SVI guides, Laplace).

Draws ``u`` from the fitted approximation ``q`` in NumPyro's unconstrained space are weighted by
``log w = log p(u, y) - log q(u)`` (:func:`log_importance_ratios`); :func:`psis_diagnostics`
smooths the weights' upper tail and returns the Pareto k: above 0.7 the approximation is
unreliable (Vehtari, Simpson, Gelman, Yao, Gabry. Pareto smoothed importance sampling. JMLR
2024;25(72):1-58; Yao, Vehtari, Simpson, Gelman. Yes, but did it work?: evaluating variational
inference. ICML 2018).

:func:`guide_draws` reads NumPyro guide internals (``_unpack_latent``, ``_unpack_and_constrain``,
``_init_locs``, ``_constrain``), checked on numpyro 0.22 by ``tests/test_fit_psis.py``.
"""

from __future__ import annotations

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import PkpdError

__all__ = ["guide_draws", "log_importance_ratios", "psis_diagnostics", "normalised"]


def guide_draws(guide, params, key, n):
    """``n`` draws from a fitted continuous guide: ``(constrained sites, log q, unconstrained sites)``.

    The draws are made in the unconstrained space where the guide is a normal distribution
    (full-rank for ``AutoContinuous`` guides such as AutoMultivariateNormal, AutoLowRank...
    and AutoLaplaceApproximation; one independent normal per site and element for
    AutoNormal), ``log q`` is their log density there, and the constrained values (with the
    model's deterministic sites) come from the guide's own post-processing of the same
    draws, so the stored draws are the ones :func:`log_importance_ratios` weights.
    """
    import numpyro.distributions as dist
    from numpyro.infer.autoguide import AutoContinuous, AutoNormal

    if isinstance(guide, AutoContinuous):
        q = guide.get_posterior(params)
        latent = q.sample(key, (n,))
        log_q = q.log_prob(latent)
        unconstrained = jax.vmap(guide._unpack_latent)(latent)
        return guide._unpack_and_constrain(latent, params), log_q, unconstrained
    if isinstance(guide, AutoNormal):
        prefix = guide.prefix
        keys = jax.random.split(key, len(guide._init_locs))
        unconstrained, log_q = {}, jnp.zeros(n)
        for k_site, site in zip(keys, guide._init_locs):
            normal = dist.Normal(params[f"{site}_{prefix}_loc"], params[f"{site}_{prefix}_scale"])
            u = normal.sample(k_site, (n,))
            unconstrained[site] = u
            log_q = log_q + normal.log_prob(u).reshape(n, -1).sum(axis=1)
        return guide._constrain(unconstrained), log_q, unconstrained
    raise PkpdError(f"no importance-sampling draws for guide {type(guide).__name__}")  # pragma: no cover


def log_importance_ratios(model, unconstrained: dict, log_q, parallel: bool = False) -> np.ndarray:
    """``log p(u, y) - log q(u)`` of every draw ``u`` (unconstrained; Jacobians of the
    transforms to the constrained space included, as in NUTS's potential energy).

    One model evaluation per draw: vectorised (``parallel``, for a GPU) or one after the
    other (a CPU: constant memory). Non-finite values (a failed ODE solve) become ``-inf``.
    """
    from numpyro.infer.util import potential_energy

    def log_p(u):
        return -potential_energy(model, (), {}, u)

    if parallel:
        values = jax.jit(jax.vmap(log_p))(unconstrained)
    else:
        values = jax.jit(lambda us: jax.lax.map(log_p, us))(unconstrained)
    log_w = np.asarray(values, dtype=float) - np.asarray(log_q, dtype=float)
    return np.where(np.isfinite(log_w), log_w, -np.inf)


def normalised(log_w: np.ndarray) -> np.ndarray:
    """Weights ``exp(log_w)`` scaled to sum to 1 (computed from the largest, so no overflow)."""
    w = np.exp(log_w - np.max(log_w))
    return w / w.sum()


def psis_diagnostics(log_w) -> tuple[np.ndarray, float, float]:
    """Pareto-smoothed importance sampling of log importance ratios ``log_w [n]``.

    Returns ``(smoothed normalised log weights, Pareto k, effective sample size)``:
    :func:`arviz.psislw` with ``reff=1`` (independent draws), and ``ESS = 1 / sum(w^2)``
    of the smoothed normalised weights (Vehtari, Simpson, Gelman, Yao, Gabry. Pareto
    smoothed importance sampling. JMLR 2024;25(72):1-58). ``k`` is ``inf`` when fewer
    than two ratios are finite, and ``-inf`` when all are equal within 1e-6 (the guide is
    the posterior: no tail to fit; arviz would return ``inf``).
    """
    log_w = np.asarray(log_w, dtype=float)
    finite = np.isfinite(log_w)
    if finite.sum() < 2:
        return np.full(log_w.shape, -np.log(max(finite.sum(), 1))), float("inf"), float(finite.sum())
    if finite.all() and np.ptp(log_w) < 1e-6:
        # Equal ratios (the guide is the posterior up to rounding): no tail to fit (arviz would say inf).
        return np.full(log_w.shape, -np.log(log_w.size)), float("-inf"), float(log_w.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns on large k itself; Fit.check says it in plain words
        smoothed, k = az.psislw(np.where(finite, log_w, np.min(log_w[finite]) - 1e3), reff=1.0)
    smoothed = np.where(finite, np.asarray(smoothed, dtype=float), -np.inf)
    w = normalised(smoothed)
    with np.errstate(divide="ignore"):
        return np.log(w), float(k), float(1.0 / np.sum(w**2))
