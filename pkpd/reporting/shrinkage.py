r"""Shrinkage of the random effects and of the residuals (Savic and Karlsson 2009).

* eta-shrinkage of random effect :math:`k`:

  .. math:: \text{sh}_\eta(k) = 1 - \frac{\operatorname{SD}_i\bigl(E[\eta_{ik} \mid y]\bigr)}{\omega_k}

  with :math:`E[\eta_{ik} \mid y]` the posterior mean of subject :math:`i`'s random effect
  (the Bayesian counterpart of the empirical Bayes estimate) and :math:`\omega_k` the
  posterior mean of the IIV SD (log scale).
* epsilon-shrinkage of an output:

  .. math:: \text{sh}_\varepsilon = 1 - \operatorname{SD}_{ij}(\text{IWRES}_{ij})

  with IWRES the individual weighted residuals at the posterior-median individual
  prediction and residual SD (:func:`pkpd.reporting.simulation.weighted_residual`).

Values above about 20-30% mean that individual estimates (and diagnostics built on
them: IPRED vs DV, eta vs covariate plots) are drawn towards the population and hide
misfit.

Reference
---------
Savic RM, Karlsson MO. Importance of shrinkage in empirical Bayes estimates for
diagnostics: problems and solutions. AAPS J 2009;11(3):558-569.
"""

from __future__ import annotations

import numpy as np

__all__ = ["eta_shrinkage", "epsilon_shrinkage"]


def eta_shrinkage(eta, omega) -> np.ndarray:
    """eta-shrinkage per random effect (fraction, not %).

    Parameters
    ----------
    eta : array, shape [draws, subjects, K]
        Posterior draws of the random effects.
    omega : array, shape [draws, K]
        Posterior draws of the IIV SDs.

    Returns
    -------
    numpy.ndarray, shape [K]
        NaN where fewer than two subjects or omega is 0.
    """
    eta = np.asarray(eta, float)
    omega = np.asarray(omega, float)
    if eta.ndim != 3 or eta.shape[1] < 2:
        return np.full(eta.shape[-1] if eta.ndim else 0, np.nan)
    ebe = eta.mean(axis=0)  # [subjects, K]
    om = omega.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(om > 0, 1.0 - ebe.std(axis=0, ddof=1) / om, np.nan)


def epsilon_shrinkage(iwres) -> float:
    """epsilon-shrinkage (fraction) of individual weighted residuals (NaNs, e.g. censored points, ignored)."""
    r = np.asarray(iwres, float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return float("nan")
    return float(1.0 - r.std(ddof=1))
