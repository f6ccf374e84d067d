r"""Visual predictive checks: binned percentiles of observed and simulated data.

For one output, observations :math:`y_j` at times :math:`t_j` and ``K`` replicates
:math:`y^{(k)}_j` simulated from the posterior predictive with new random effects
(:mod:`pkpd.reporting.simulation`), the times are grouped into bins (quantiles of the
observation times by default, or the user's edges). In every bin :math:`b`:

* the observed percentiles :math:`Q_p(\{y_j\}_{j \in b})`, :math:`p` in 5, 50, 95%;
* for each replicate the same percentiles, then their median and a ``ci`` (90%)
  interval over replicates: the band the observed percentile should fall in;
* with censoring (below the LLOQ), censored observations and simulated values below the
  observation's LLOQ count as "below" (a value of 0): percentiles that fall below the
  bin's LLOQ are not drawn, and the fraction below the LLOQ is compared separately
  (observed vs the simulated median and interval).

Prediction correction (pcVPC; Bergstrand et al. 2011): each value is multiplied by
:math:`\mathrm{PRED}_b / \mathrm{PRED}_j` (median population prediction of the bin over
the observation's own), which removes the variability due to doses, covariates and
times within a bin (appropriate for the positive, log-normal-like outputs of pkpd).

Reference
---------
Bergstrand M, Hooker AC, Wallin JE, Karlsson MO. Prediction-corrected visual predictive
checks for diagnosing nonlinear mixed-effects models. AAPS J 2011;13(2):143-151.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import PkpdError

__all__ = ["time_bins", "assign_bins", "prediction_correct", "vpc_table", "plot_vpc"]

PERCENTILES = (0.05, 0.5, 0.95)


def time_bins(t, n_bins: int = 8) -> np.ndarray:
    """Bin edges at quantiles of the observation times (repeated edges merged).

    Returns ``edges`` with ``edges[0] = min(t)`` and ``edges[-1] = max(t)``.
    """
    t = np.asarray(t, float)
    if t.size == 0:
        raise PkpdError("no observation to bin")
    if n_bins < 1:
        raise PkpdError(f"the number of bins must be >= 1, got {n_bins}")
    edges = np.unique(np.quantile(t, np.linspace(0.0, 1.0, int(n_bins) + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return edges


def assign_bins(t, edges) -> np.ndarray:
    """Bin index of each time: bins are ``[e_k, e_{k+1})``, the last one closed; -1 outside."""
    t = np.asarray(t, float)
    edges = np.asarray(edges, float)
    k = np.searchsorted(edges, t, side="right") - 1
    k = np.where(t == edges[-1], len(edges) - 2, k)
    return np.where((t < edges[0]) | (t > edges[-1]), -1, k)


def prediction_correct(values, pred, bins) -> np.ndarray:
    """Prediction-corrected values ``values * median(pred in bin) / pred`` (``values`` [..., n])."""
    pred = np.asarray(pred, float)
    bins = np.asarray(bins)
    ref = np.full(pred.shape, np.nan)
    for b in np.unique(bins[bins >= 0]):
        sel = bins == b
        ref[sel] = np.median(pred[sel])
    return np.asarray(values, float) * ref / pred


def _percentiles(x, q, axis=-1):
    return np.quantile(x, q, axis=axis)


def vpc_table(t, y, sims, *, edges=None, n_bins: int = 8, percentiles=PERCENTILES, ci: float = 0.9,
              censored=None, lloq=None, pred=None, sim_pred=None) -> pd.DataFrame:
    """Binned VPC statistics of one output (one stratum).

    Parameters
    ----------
    t, y : array [n]
        Observation times and values.
    sims : array [K, n]
        Simulated replicates of the observations.
    edges : array, optional
        Bin edges (default :func:`time_bins` ``(t, n_bins)``).
    censored, lloq : array [n], optional
        Censoring flags and limits (BLQ handling, see the module notes).
    pred : array [n], optional
        Population predictions: prediction-correct (pcVPC) when given.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``bin, lo, hi, t`` (median time), ``n``, and per
        percentile ``p`` (as ``5``, ``50``, ``95``): ``obs_<p>``, ``sim_<p>`` (median over
        replicates), ``sim_<p>_lo``, ``sim_<p>_hi``; with censoring also ``lloq``,
        ``blq_obs``, ``blq_sim``, ``blq_sim_lo``, ``blq_sim_hi``.
    """
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    sims = np.asarray(sims, float)
    if sims.ndim != 2 or sims.shape[1] != y.size:
        raise PkpdError(f"sims must have shape [K, {y.size}], got {sims.shape}")
    edges = time_bins(t, n_bins) if edges is None else np.asarray(edges, float)
    bins = assign_bins(t, edges)
    cens = np.zeros(y.shape, bool) if censored is None else np.asarray(censored, bool)
    has_blq = bool(cens.any())
    lq = np.full(y.shape, np.nan) if lloq is None else np.asarray(lloq, float)
    if has_blq:
        y = np.where(cens, 0.0, y)
        limit = np.where(np.isfinite(lq), lq, -np.inf)
        sim_blq = sims < limit[None, :]
        sims = np.where(sim_blq, 0.0, sims)
    if pred is not None:
        y = prediction_correct(y, pred, bins)
        sims = prediction_correct(sims, pred if sim_pred is None else sim_pred, bins)
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    rows = []
    for b in range(len(edges) - 1):
        sel = bins == b
        if not sel.any():
            continue
        row = {"bin": b, "lo": edges[b], "hi": edges[b + 1], "t": float(np.median(t[sel])), "n": int(sel.sum())}
        s = sims[:, sel]
        s = s[np.all(np.isfinite(s), axis=1)]
        sim_q = _percentiles(s, percentiles, axis=1) if s.shape[0] else np.full((len(percentiles), 1), np.nan)
        obs_q = _percentiles(y[sel], percentiles)
        bin_lloq = float(np.nanmax(lq[sel])) if has_blq and np.isfinite(lq[sel]).any() else np.nan
        for p, oq, sq in zip(percentiles, obs_q, sim_q):
            name = f"{p * 100:g}"
            below = has_blq and np.isfinite(bin_lloq) and oq < bin_lloq
            row[f"obs_{name}"] = np.nan if below else float(oq)
            row[f"sim_{name}"] = float(np.median(sq))
            row[f"sim_{name}_lo"] = float(np.quantile(sq, lo_q))
            row[f"sim_{name}_hi"] = float(np.quantile(sq, hi_q))
        if has_blq:
            frac = sim_blq[:, sel].mean(axis=1)
            row.update(lloq=bin_lloq, blq_obs=float(cens[sel].mean()), blq_sim=float(np.median(frac)),
                       blq_sim_lo=float(np.quantile(frac, lo_q)), blq_sim_hi=float(np.quantile(frac, hi_q)))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_vpc(ax, table: pd.DataFrame, *, t=None, y=None, percentiles=PERCENTILES, log=False, ylabel="",
             title="", time_scale=24.0, time_unit="days"):
    """Draw a VPC on ``ax``: simulated percentile bands (shaded), their medians (dashed), the
    observed percentiles (solid, with points) and, optionally, the observations ``t, y``."""
    x = table["t"].to_numpy(float) / time_scale
    colours = {0: "C0", 1: "C3", 2: "C0"}
    if t is not None and y is not None:
        ax.plot(np.asarray(t, float) / time_scale, y, "o", color="0.55", ms=2.5, alpha=0.6, label="observed")
    for k, p in enumerate(percentiles):
        name = f"{p * 100:g}"
        c = colours.get(k, "C0") if len(percentiles) == 3 else "C0"
        ax.fill_between(x, table[f"sim_{name}_lo"], table[f"sim_{name}_hi"], color=c, alpha=0.2, lw=0,
                        label=f"simulated {name}th pct (90% CI)" if k in (0, 1) else None)
        ax.plot(x, table[f"sim_{name}"], "--", color=c, lw=1)
        ax.plot(x, table[f"obs_{name}"], "-", color="k" if name == "50" else "0.25", lw=1.6 if name == "50" else 1.0,
                marker=".", label=f"observed {name}th pct" if k in (0, 1) else None)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)


def plot_blq(ax, table: pd.DataFrame, *, time_scale=24.0, time_unit="days", title=""):
    """Fraction below the LLOQ per bin: observed (line) vs simulated median and 90% interval."""
    x = table["t"].to_numpy(float) / time_scale
    ax.fill_between(x, table["blq_sim_lo"], table["blq_sim_hi"], color="C1", alpha=0.25, lw=0,
                    label="simulated (90% CI)")
    ax.plot(x, table["blq_sim"], "--", color="C1", lw=1)
    ax.plot(x, table["blq_obs"], "-o", color="k", ms=3, lw=1.2, label="observed")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("fraction < LLOQ")
    if title:
        ax.set_title(title, fontsize=9)
