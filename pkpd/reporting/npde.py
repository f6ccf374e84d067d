r"""Normalised prediction distribution errors (NPDE) from posterior predictive simulations.

For subject :math:`i` with observations :math:`y_i` (one output, on the scale of its
residual model: :math:`\log y` for a log-additive error, else :math:`y`) and ``K``
simulated replicates :math:`y_i^{(k)}` of the same design (new random effects and
residuals drawn from the posterior predictive; :mod:`pkpd.reporting.simulation`):

1. empirical mean :math:`E_i` and covariance :math:`V_i` of the replicates;
2. decorrelation: :math:`y_i^* = V_i^{-1/2} (y_i - E_i)`, likewise every replicate
   (symmetric inverse square root; Cholesky gives the same NPDE up to ordering);
3. prediction discrepancy :math:`pd_{ij} = \frac1K \sum_k 1[y^{*(k)}_{ij} < y^*_{ij}]`,
   clipped to :math:`[1/(2K), 1 - 1/(2K)]`;
4. :math:`\text{npde}_{ij} = \Phi^{-1}(pd_{ij})`.

Under the model, NPDE are independent standard normal (Brendel et al. 2006, Comets et
al. 2008). Censored observations get NaN (they are left out, not imputed).

References
----------
Brendel K, Comets E, Laffont C, Laveille C, Mentre F. Metrics for external model
evaluation with an application to the population pharmacokinetics of gliclazide.
Pharm Res 2006;23(9):2036-2049.
Comets E, Brendel K, Mentre F. Computing normalised prediction distribution errors to
evaluate nonlinear mixed-effect models: the npde add-on package for R. Comput Methods
Programs Biomed 2008;90(2):154-166.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["npde", "prediction_discrepancy"]


def _inv_sqrt(v: np.ndarray) -> np.ndarray:
    w, q = np.linalg.eigh((v + v.T) / 2.0)
    w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
    return (q / np.sqrt(w)) @ q.T


def prediction_discrepancy(y, sims, *, decorrelate: bool = True) -> np.ndarray:
    """pd of one subject's observations ``y [n]`` given replicates ``sims [K, n]`` (see the module notes)."""
    y = np.asarray(y, float)
    sims = np.asarray(sims, float)
    K = sims.shape[0]
    if decorrelate and y.size > 1:
        mean = sims.mean(axis=0)
        w = _inv_sqrt(np.cov(sims, rowvar=False))
        y = w @ (y - mean)
        sims = (sims - mean) @ w.T
    pd_ = (sims < y[None, :]).mean(axis=0)
    return np.clip(pd_, 1.0 / (2 * K), 1.0 - 1.0 / (2 * K))


def npde(ids, y, sims, *, censored=None, log=False, decorrelate: bool = True) -> np.ndarray:
    """NPDE of observations ``y [n]`` (several subjects, one output) from replicates ``sims [K, n]``.

    Parameters
    ----------
    ids : array [n]
        Subject of each observation.
    censored : array of bool [n], optional
        Censored points: NaN, and left out of the decorrelation.
    log : bool
        Work with ``log y`` (log-additive residual error).
    decorrelate : bool
        Decorrelate within subject (recommended; off gives the "pde" of each point alone).

    Returns
    -------
    numpy.ndarray [n]
    """
    ids = np.asarray(ids)
    y = np.asarray(y, float)
    sims = np.asarray(sims, float)
    cens = np.zeros(y.shape, bool) if censored is None else np.asarray(censored, bool)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            y, sims = np.log(y), np.log(sims)
    out = np.full(y.shape, np.nan)
    for i in dict.fromkeys(ids.tolist()):
        sel = np.flatnonzero((ids == i) & ~cens & np.isfinite(y))
        if sel.size == 0:
            continue
        s = sims[:, sel]
        s = s[np.all(np.isfinite(s), axis=1)]
        if s.shape[0] < 2:
            continue
        dec = decorrelate and s.shape[0] > sel.size
        out[sel] = norm.ppf(prediction_discrepancy(y[sel], s, decorrelate=dec))
    return out
