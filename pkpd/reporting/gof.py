r"""Goodness-of-fit plots of one output: observations vs predictions, residuals, NPDE, LOO-PIT.

Panels (one figure per output):

1. DV vs PRED (population prediction, typical subject, posterior median) and
2. DV vs IPRED (individual prediction, posterior median), with the identity line; log
   axes for positive outputs (counts, concentrations);
3. conditional residuals (posterior mean of IWRES, :mod:`pkpd.reporting.simulation`) vs
   time and 4. vs PRED, with the 0 and +-1.96 lines;
5. NPDE vs time (:mod:`pkpd.reporting.npde`) and 6. their normal Q-Q plot;
7. LOO-PIT (ArviZ :func:`arviz.plot_loo_pit`): the leave-one-out probability integral
   transforms of the observations, uniform when the posterior predictive is calibrated.

Censored observations are shown as open triangles at their LLOQ in panels 1-2 and left
out of residuals, NPDE and LOO-PIT.
"""

from __future__ import annotations

import numpy as np

from .figures import log_axis, new_figure

__all__ = ["gof_figure", "loo_pit_values", "plot_loo_pit"]


def loo_pit_values(idata_output):
    """LOO-PIT values of variable ``DV`` of an InferenceData holding ``posterior_predictive``,
    ``log_likelihood`` and ``observed_data`` (:func:`arviz.loo_pit`)."""
    import arviz as az

    return np.asarray(az.loo_pit(idata=idata_output, y="DV"))


def plot_loo_pit(ax, idata_output, title="LOO-PIT") -> None:
    """ArviZ's LOO-PIT plot (``ecdf`` difference form) on ``ax``."""
    import arviz as az

    az.plot_loo_pit(idata_output, y="DV", ecdf=True, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("LOO-PIT", fontsize=9)
    ax.tick_params(labelsize=8)
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            text.set_fontsize(7)


def gof_figure(frame, output: str, *, npde_values=None, idata_output=None, log: bool = True, unit: str = ""):
    """The goodness-of-fit figure of ``output`` (see the module notes).

    Parameters
    ----------
    frame : pandas.DataFrame
        :attr:`PosteriorSimulation.frame` rows of this output (``TIME, DV, CENS, LLOQ,
        PRED, IPRED, IWRES``).
    npde_values : array, optional
        NPDE of the rows (NaN for censored ones).
    idata_output : arviz.InferenceData, optional
        For the LOO-PIT panel.
    log : bool
        Log axes for DV and predictions.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from scipy.stats import norm

    cens = frame["CENS"].to_numpy(bool)
    dv = frame["DV"].to_numpy(float)
    t_d = frame["TIME"].to_numpy(float) / 24.0
    pred = frame["PRED"].to_numpy(float)
    ipred = frame["IPRED"].to_numpy(float)
    res = frame["IWRES"].to_numpy(float)
    n_panels = 7 if idata_output is not None else 6
    fig = new_figure(13.0, 6.6)
    axes = fig.subplots(2, 4).ravel()
    label = f"{output} ({unit})" if unit else output
    for ax, x, name in ((axes[0], pred, "PRED"), (axes[1], ipred, "IPRED")):
        ok = ~cens
        ax.plot(x[ok], dv[ok], "o", ms=3, alpha=0.6, color="C0", label="observed")
        if cens.any():
            ax.plot(x[cens], frame["LLOQ"].to_numpy(float)[cens], "v", mfc="none", color="C3", ms=4, label="< LLOQ")
        finite = np.concatenate([x[np.isfinite(x) & (x > 0 if log else True)],
                                 dv[ok & np.isfinite(dv) & (dv > 0 if log else True)]])
        if finite.size:
            lo, hi = finite.min(), finite.max()
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        if log:
            log_axis(ax, "x")
            log_axis(ax, "y")
        ax.set_xlabel(f"{name} ({output})")
        ax.set_ylabel(f"observed {label}")
        ax.set_title(f"observed vs {name}", fontsize=9)
    for ax, x, xlabel, xlog in ((axes[2], t_d, "time (days)", False), (axes[3], pred, f"PRED ({output})", log)):
        ax.plot(x, res, "o", ms=3, alpha=0.6, color="C0")
        for h, style in ((0.0, "-"), (1.96, ":"), (-1.96, ":")):
            ax.axhline(h, color="k", ls=style, lw=0.8)
        if xlog:
            log_axis(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("conditional residual (IWRES)")
        ax.set_title(f"residuals vs {xlabel.split(' ')[0]}", fontsize=9)
    v = np.full(len(frame), np.nan) if npde_values is None else np.asarray(npde_values, float)
    axes[4].plot(t_d, v, "o", ms=3, alpha=0.6, color="C2")
    for h, style in ((0.0, "-"), (1.96, ":"), (-1.96, ":")):
        axes[4].axhline(h, color="k", ls=style, lw=0.8)
    axes[4].set_xlabel("time (days)")
    axes[4].set_ylabel("NPDE")
    axes[4].set_title("NPDE vs time", fontsize=9)
    fin = np.sort(v[np.isfinite(v)])
    if fin.size:
        q = norm.ppf((np.arange(1, fin.size + 1) - 0.5) / fin.size)
        axes[5].plot(q, fin, "o", ms=3, color="C2")
        lim = max(3.0, float(np.abs(fin).max()))
        axes[5].plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    axes[5].set_xlabel("standard normal quantile")
    axes[5].set_ylabel("NPDE quantile")
    axes[5].set_title(f"NPDE Q-Q (mean {np.nanmean(fin) if fin.size else np.nan:.2f}, "
                      f"SD {np.std(fin, ddof=1) if fin.size > 1 else np.nan:.2f})", fontsize=9)
    if idata_output is not None:
        plot_loo_pit(axes[6], idata_output)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(f"Goodness of fit: {output}")
    return fig
