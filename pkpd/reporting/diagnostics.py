r"""Parameter table and sampler diagnostics of a population fit (ArviZ).

Parameter table, one row per population parameter (typical values ``tv_<p>``, IIV SDs
``omega_<p>``, residual SDs ``sigma_<output>``): posterior mean, median, equal-tailed
90% interval, relative SD (``100 sd / |mean|``, the Bayesian counterpart of NONMEM's
RSE), for IIV the coefficient of variation of the log-normal random effect
:math:`\mathrm{CV} = 100 \sqrt{e^{\omega^2} - 1}` (posterior mean), the eta-shrinkage
(IIV rows) or epsilon-shrinkage (residual rows; :mod:`pkpd.reporting.shrinkage`),
bulk and tail ESS and rank-normalised split R-hat (:func:`arviz.ess`,
:func:`arviz.rhat`; NUTS only: draws from an SVI guide or a MAP point are not a Markov
chain). Problems are listed per row: R-hat > 1.01, ESS < 400 (or < 100 per chain when
fewer draws), relative SD > 50%, shrinkage > 30%.

Sampler figures (NUTS): rank plots of the typical values (:func:`arviz.plot_rank`),
energy plot with E-BFMI (:func:`arviz.plot_energy`), divergent transitions over the
draws and the tree-depth histogram.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import new_figure

__all__ = ["parameter_table", "sampler_summary", "sampler_figures", "THRESHOLDS"]

#: Limits that flag a row of the parameter table.
THRESHOLDS = {"r_hat": 1.01, "ess": 400, "rse_pct": 50.0, "shrinkage_pct": 30.0}


def _is_mcmc(fit) -> bool:
    return fit.method == "nuts" and fit.idata.posterior.sizes["draw"] >= 4


def parameter_table(fit, *, eta_shrinkage=None, eps_shrinkage=None, interval: float = 0.9) -> pd.DataFrame:
    """The parameter table (see the module notes).

    Parameters
    ----------
    fit : pkpd.Fit
    eta_shrinkage : dict, optional
        ``{parameter: fraction}`` for the ``omega_<p>`` rows.
    eps_shrinkage : dict, optional
        ``{output: fraction}`` for the ``sigma_<output>`` rows.

    Returns
    -------
    pandas.DataFrame
        Indexed by parameter; columns ``mean, median, lo, hi, rse_pct, cv_pct,
        shrinkage_pct, ess_bulk, ess_tail, r_hat, problems``.
    """
    import arviz as az

    post = fit.idata.posterior
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    ess_min = min(THRESHOLDS["ess"], 100 * n_chain)
    mcmc = _is_mcmc(fit)
    eta_shrinkage = eta_shrinkage or {}
    eps_shrinkage = eps_shrinkage or {}
    rows = []
    for name in fit.parameter_names():
        x = np.asarray(post[name].values, float).reshape(n_chain, n_draw)
        flat = x.ravel()
        mean = float(flat.mean())
        sd = float(flat.std(ddof=1)) if flat.size > 1 else 0.0
        row = {"parameter": name, "mean": mean, "median": float(np.median(flat)),
               "lo": float(np.quantile(flat, lo_q)), "hi": float(np.quantile(flat, hi_q)),
               "rse_pct": 100.0 * sd / abs(mean) if mean != 0 else np.nan,
               "cv_pct": np.nan, "shrinkage_pct": np.nan, "ess_bulk": np.nan, "ess_tail": np.nan, "r_hat": np.nan}
        if name.startswith("omega_"):
            row["cv_pct"] = float(np.mean(100.0 * np.sqrt(np.expm1(flat**2))))
            sh = eta_shrinkage.get(name[len("omega_"):])
            row["shrinkage_pct"] = 100.0 * sh if sh is not None else np.nan
        elif name.startswith("sigma_"):
            out = name[len("sigma_"):]
            out = out.rsplit("_", 1)[0] if out.endswith(("_add", "_prop")) else out
            sh = eps_shrinkage.get(out)
            row["shrinkage_pct"] = 100.0 * sh if sh is not None else np.nan
        if mcmc:
            row["ess_bulk"] = float(az.ess(x, method="bulk"))
            row["ess_tail"] = float(az.ess(x, method="tail"))
            row["r_hat"] = float(az.rhat(x)) if n_chain > 1 else np.nan
        problems = []
        if np.isfinite(row["r_hat"]) and row["r_hat"] > THRESHOLDS["r_hat"]:
            problems.append(f"R-hat > {THRESHOLDS['r_hat']}")
        if np.isfinite(row["ess_bulk"]) and row["ess_bulk"] < ess_min:
            problems.append(f"bulk ESS < {ess_min}")
        if np.isfinite(row["ess_tail"]) and row["ess_tail"] < ess_min:
            problems.append(f"tail ESS < {ess_min}")
        if np.isfinite(row["rse_pct"]) and row["rse_pct"] > THRESHOLDS["rse_pct"] and name.startswith("tv_"):
            problems.append(f"relative SD > {THRESHOLDS['rse_pct']:g}%")
        if np.isfinite(row["shrinkage_pct"]) and row["shrinkage_pct"] > THRESHOLDS["shrinkage_pct"]:
            problems.append(f"shrinkage > {THRESHOLDS['shrinkage_pct']:g}%")
        row["problems"] = "; ".join(problems)
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")


def sampler_summary(fit) -> dict:
    """Divergences, E-BFMI per chain, tree depth (mean, max, share at the limit), acceptance (NUTS);
    for SVI/MAP the optimisation's convergence."""
    import arviz as az

    s = fit.settings
    if fit.method != "nuts" or "sample_stats" not in fit.idata.groups():
        return {"method": fit.method, "converged": s.get("converged"), "steps_run": s.get("steps_run"),
                "final_loss": s.get("final_loss")}
    st = fit.idata.sample_stats
    out = {"method": "nuts", "divergences": int(np.asarray(st["diverging"]).sum()),
           "draws": int(st.sizes["chain"] * st.sizes["draw"])}
    try:
        out["bfmi"] = [float(b) for b in az.bfmi(fit.idata)]
    except Exception:  # noqa: BLE001 - E-BFMI needs the energy of several draws
        out["bfmi"] = []
    if "tree_depth" in st:
        depth = np.asarray(st["tree_depth"])
        limit = int(s.get("max_tree_depth", 10))
        out.update(mean_tree_depth=float(depth.mean()), max_tree_depth=int(depth.max()),
                   share_at_max_depth=float(np.mean(depth >= limit)))
    if "acceptance_rate" in st:
        out["mean_accept"] = float(np.asarray(st["acceptance_rate"]).mean())
    return out


def sampler_figures(fit) -> dict:
    """``{name: Figure}``: ``rank`` (typical values), ``energy``, ``divergences_tree_depth`` (NUTS);
    ``posterior`` (marginal densities of the typical values) for SVI/MAP fits."""
    import arviz as az

    post = fit.idata.posterior
    tv = [v for v in post.data_vars if v.startswith("tv_")]
    figs = {}
    if not tv:
        return figs
    if fit.method != "nuts" or "sample_stats" not in fit.idata.groups():
        if post.sizes["draw"] > 1:
            fig = new_figure(3.2 * min(len(tv), 4), 2.6 * -(-len(tv) // 4))
            axes = fig.subplots(-(-len(tv) // 4), min(len(tv), 4), squeeze=False).ravel()
            az.plot_posterior(fit.idata, var_names=tv, ax=axes[: len(tv)], hdi_prob=0.9, textsize=8)
            for ax in axes[len(tv):]:
                ax.set_visible(False)
            fig.suptitle(f"Posterior of the typical values ({fit.method.upper()} draws: no sampler diagnostics)")
            figs["posterior"] = fig
        return figs
    ncol = min(len(tv), 4)
    nrow = -(-len(tv) // ncol)
    fig = new_figure(3.4 * ncol, 2.6 * nrow + 0.3)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    az.plot_rank(fit.idata, var_names=tv, ax=axes[: len(tv)])
    for ax in axes[len(tv):]:
        ax.set_visible(False)
    fig.suptitle("Rank plots of the typical values (uniform when the chains mix)")
    figs["rank"] = fig
    st = fit.idata.sample_stats
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    az.plot_energy(fit.idata, ax=ax, textsize=8)
    ax.set_title("Energy: marginal vs transition (E-BFMI in the legend)", fontsize=9)
    figs["energy"] = fig
    fig = new_figure(10.0, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    div = np.asarray(st["diverging"])
    for c in range(div.shape[0]):
        ax1.plot(np.cumsum(div[c]), label=f"chain {c}")
    ax1.set_xlabel("draw")
    ax1.set_ylabel("cumulative divergences")
    ax1.set_title(f"Divergent transitions: {int(div.sum())}", fontsize=9)
    ax1.legend(fontsize=7)
    if "tree_depth" in st:
        depth = np.asarray(st["tree_depth"]).ravel()
        ax2.hist(depth, bins=np.arange(0.5, depth.max() + 1.5), color="C0")
        limit = fit.settings.get("max_tree_depth")
        if limit:
            ax2.axvline(limit + 0.5, color="C3", ls="--", lw=1, label=f"max_tree_depth {limit}")
            ax2.legend(fontsize=7)
    ax2.set_xlabel("tree depth")
    ax2.set_ylabel("draws")
    ax2.set_title("Tree depth", fontsize=9)
    figs["divergences_tree_depth"] = fig
    return figs
