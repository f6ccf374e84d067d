r"""Residual-error models as NumPyro distributions, censoring included.

Every use of a residual-error model (the likelihood of a population fit, the pointwise
log-likelihood, the posterior predictive, simulation) goes through
:func:`residual_distribution`, so each model is written once. For an observation
:math:`y` of an output with (individual) prediction :math:`f > 0`:

* ``log_additive``: :math:`\log y \sim N(\log f, \sigma)` (log-transform both sides);
* ``proportional``: :math:`y \sim N(f, \sigma f)`;
* ``additive``: :math:`y \sim N(f, \sigma)`;
* ``combined``: :math:`y \sim N(f, \sqrt{\sigma_a^2 + \sigma_p^2 f^2})`.

**Scale of the log-additive density.** :class:`LogAdditiveNormal` is the log-normal
distribution of :math:`y` (``sample`` draws :math:`y = f e^{\sigma\varepsilon}`), but its
``log_prob(y)`` is the density of :math:`\log y`,

.. math::

    \log p(\log y) = -\tfrac12 \Bigl(\frac{\log y - \log f}{\sigma}\Bigr)^2 - \log \sigma
    - \tfrac12 \log 2\pi = \log p_{\mathrm{LogNormal}}(y) + \log y,

i.e. *without* the Jacobian :math:`-\log y` of the change of variable. This is the
likelihood of the transform-both-sides model as NONMEM computes it (the data are
:math:`\log y`), and it is what pkpd has always used: the Jacobian does not depend on the
parameters, so posteriors and MAP estimates are the same either way, but pointwise
log-likelihoods (LOO, WAIC) of a log-additive output are on the :math:`\log y` scale and
must not be compared with those of a model whose density is on :math:`y`.

**Censoring** (:class:`CensoredResidual`). An observation flagged below the lower limit
of quantification :math:`L` contributes, with :math:`F` the distribution function of
:math:`Y`,

* M3: :math:`\log P(Y < L) = \log F(L)`;
* M4: :math:`\log [P(0 < Y < L) / P(Y > 0)] = \log [(F(L) - F(0)) / (1 - F(0))]`,
  which equals M3 for ``log_additive`` (:math:`P(Y \le 0) = 0`);

(Beal 2001). Sampling a censored point draws the *uncensored* value :math:`Y` (the
measurement the assay would have reported); compare it with the LLOQ to reproduce the
censoring flags.

**Failed predictions.** Points flagged ``failed`` (an ODE solve that did not finish, a
non-finite or non-positive prediction) have log density :math:`-\infty` and sample NaN:
a failed solve makes the whole log density :math:`-\infty`, which NUTS counts as a
divergence, instead of raising or giving NaN.

References
----------
Beal SL. Ways to fit a PK model with some data below the quantification limit.
J Pharmacokinet Pharmacodyn 2001;28(5):481-504.
Karlsson MO, Beal SL, Sheiner LB. Three new residual error models for population PK/PD
analyses. J Pharmacokinet Biopharm 1995;23(6):651-672.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro.distributions as dist
from jax import lax
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints

from ..errors import ModelError

__all__ = ["ERROR_MODELS", "CENSORING", "LogAdditiveNormal", "ResidualNormal", "CensoredResidual",
           "residual_distribution"]

#: Residual-error models (``[error]`` of a model card).
ERROR_MODELS = ("log_additive", "proportional", "additive", "combined")
#: Likelihood of censored (below LLOQ) observations.
CENSORING = ("M3", "M4")

# Smallest gap kept between log F(L) and log F(0) in the M4 likelihood: the log of a
# difference that rounds to zero stays finite (about -690.8), with a zero gradient.
_TINY = 1e-300


class ResidualNormal(dist.Normal):
    r"""``y ~ N(loc, scale)`` with the log distribution and survival functions used by censoring.

    ``log_cdf(v) = log Phi((v - loc)/scale)`` and ``log_sf(v) = log Phi((loc - v)/scale)``,
    both with :func:`jax.scipy.special.log_ndtr` (accurate far in the tails).
    """

    def log_cdf(self, value):
        return log_ndtr((value - self.loc) / self.scale)

    def log_sf(self, value):
        return log_ndtr((self.loc - value) / self.scale)


class LogAdditiveNormal(dist.LogNormal):
    r"""``log y ~ N(log f, scale)``: log-normal ``y`` whose ``log_prob`` is the density of ``log y``.

    Parameters
    ----------
    prediction : array
        :math:`f > 0`, the median of :math:`y`.
    scale : array
        :math:`\sigma > 0`, the SD of :math:`\log y`.

    Notes
    -----
    ``sample``, ``mean``, ``variance``, ``cdf`` are those of :class:`numpyro.distributions.LogNormal`
    (``loc = log f``). ``log_prob(y) = Normal(log f, sigma).log_prob(log y)``: the density of
    :math:`\log y`, without the Jacobian :math:`-\log y` (see the module notes).
    """

    def __init__(self, prediction, scale, *, validate_args=None):
        super().__init__(jnp.log(prediction), scale, validate_args=validate_args)

    def log_prob(self, value):
        return self.base_dist.log_prob(jnp.log(value))

    def log_cdf(self, value):
        return log_ndtr((jnp.log(value) - self.loc) / self.scale)

    def log_sf(self, value):
        return log_ndtr((self.loc - jnp.log(value)) / self.scale)


class CensoredResidual(dist.Distribution):
    r"""A residual-error distribution with observations censored below their LLOQ (M3 or M4).

    Parameters
    ----------
    base_dist : ResidualNormal or LogAdditiveNormal
        Distribution of the uncensored observation (provides ``log_prob``, ``log_cdf``,
        ``log_sf``, ``sample``).
    censored : bool array
        Per-point flag: the observation is below its LLOQ.
    lloq : array
        Per-point LLOQ (used where ``censored``; must be > 0 there).
    censoring : {"M3", "M4"}
        Likelihood of a censored point (see the module notes).
    failed : bool array, optional
        Per-point flag: the prediction is unusable (failed solve); ``log_prob`` is -inf
        and ``sample`` NaN there.

    Notes
    -----
    ``log_prob(value)`` is ``base_dist.log_prob(value)`` at uncensored points and
    :math:`\log F(L)` (M3) or :math:`\log[(F(L) - F(0))/(1 - F(0))]` (M4, real support
    only; equal to M3 on a positive support) at censored ones; ``value`` is ignored at
    censored points. ``sample`` draws the uncensored value.
    """

    pytree_data_fields = ("base_dist", "censored", "lloq", "failed")
    pytree_aux_fields = ("censoring",)

    def __init__(self, base_dist, censored, lloq, censoring: str = "M3", failed=None, *, validate_args=None):
        if censoring not in CENSORING:
            raise ModelError(f"censoring must be one of {CENSORING}, got {censoring!r}")
        self.censoring = censoring
        censored = jnp.asarray(censored, dtype=bool)
        lloq = jnp.asarray(lloq, dtype=jnp.result_type(float))
        failed = jnp.zeros((), dtype=bool) if failed is None else jnp.asarray(failed, dtype=bool)
        batch_shape = lax.broadcast_shapes(base_dist.batch_shape, jnp.shape(censored), jnp.shape(lloq),
                                           jnp.shape(failed))
        self.base_dist = base_dist.expand(batch_shape) if base_dist.batch_shape != batch_shape else base_dist
        self.censored, self.lloq, self.failed = censored, lloq, failed
        super().__init__(batch_shape=batch_shape, event_shape=(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return self.base_dist.support

    def _base(self):
        # ExpandedDistribution does not forward log_cdf / log_sf: use the unexpanded one,
        # whose batch shape broadcasts against ours.
        d = self.base_dist
        return d.base_dist if isinstance(d, dist.ExpandedDistribution) else d

    def sample(self, key, sample_shape=()):
        y = self.base_dist.sample(key, sample_shape)
        return jnp.where(self.failed, jnp.nan, y)

    def log_prob(self, value):
        base = self._base()
        # Censored points may carry any value (0, the LLOQ...): evaluate the density at the
        # LLOQ there, so the unused branch stays finite and its gradient is not NaN.
        density = base.log_prob(jnp.where(self.censored, self.lloq, value))
        below = base.log_cdf(self.lloq)
        if self.censoring == "M4" and base.support is constraints.real:
            lower = base.log_cdf(jnp.zeros_like(self.lloq))
            gap = jnp.minimum(lower - below, -_TINY)  # log F(0) - log F(L) < 0
            below = below + jnp.log(-jnp.expm1(gap)) - base.log_sf(jnp.zeros_like(self.lloq))
        lp = jnp.where(self.censored, below, density)
        return jnp.where(self.failed, -jnp.inf, lp)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance


def _positive(name, value, kind):
    if value is None:
        raise ModelError(f"residual error model {kind!r} needs `{name}`")
    return jnp.asarray(value)


def residual_distribution(kind: str, prediction, sigma=None, *, sigma_add=None, sigma_prop=None, censored=None,
                          lloq=None, censoring: str = "M3", failed=None) -> dist.Distribution:
    r"""The distribution of observations around ``prediction`` under a residual-error model.

    Parameters
    ----------
    kind : {"log_additive", "proportional", "additive", "combined"}
        Residual-error model (see the module notes for the equations).
    prediction : array
        Individual predictions :math:`f` (> 0); any shape.
    sigma : array, optional
        :math:`\sigma` of ``log_additive`` (SD of :math:`\log y`), ``proportional``
        (coefficient of variation) or ``additive`` (SD, units of :math:`y`).
    sigma_add, sigma_prop : array, optional
        :math:`\sigma_a`, :math:`\sigma_p` of the ``combined`` model.
    censored : bool array, optional
        Per-point flag of observations below the LLOQ; with it, ``lloq`` is required and
        the result is a :class:`CensoredResidual`.
    lloq : array, optional
        Per-point lower limit of quantification (> 0 where ``censored``).
    censoring : {"M3", "M4"}
        Likelihood of censored points.
    failed : bool array, optional
        Per-point flag of unusable predictions (log density -inf, samples NaN).

    Returns
    -------
    numpyro.distributions.Distribution
        :class:`LogAdditiveNormal` or :class:`ResidualNormal`, wrapped in a
        :class:`CensoredResidual` when ``censored`` or ``failed`` is given. Batch shape:
        the broadcast of the arguments.

    Examples
    --------
    >>> d = residual_distribution("proportional", f, 0.2, censored=blq, lloq=0.5)
    >>> numpyro.sample("obs_ANC", d.mask(mask), obs=y)
    """
    if kind not in ERROR_MODELS:
        raise ModelError(f"kind must be one of {ERROR_MODELS}, got {kind!r}")
    if censoring not in CENSORING:
        raise ModelError(f"censoring must be one of {CENSORING}, got {censoring!r}")
    f = jnp.asarray(prediction)
    if kind == "log_additive":
        base = LogAdditiveNormal(f, _positive("sigma", sigma, kind))
    elif kind == "proportional":
        base = ResidualNormal(f, _positive("sigma", sigma, kind) * f)
    elif kind == "additive":
        s = _positive("sigma", sigma, kind)
        base = ResidualNormal(f, jnp.broadcast_to(s, jnp.broadcast_shapes(jnp.shape(s), f.shape)))
    else:
        a = _positive("sigma_add", sigma_add, kind)
        p = _positive("sigma_prop", sigma_prop, kind)
        base = ResidualNormal(f, jnp.sqrt(a**2 + (p * f) ** 2))
    if censored is None and failed is None:
        return base
    if censored is None:
        censored = jnp.zeros((), dtype=bool)
        lloq = jnp.ones(())
    elif lloq is None:
        raise ModelError("`lloq` is required with `censored`")
    return CensoredResidual(base, censored, lloq, censoring, failed)
