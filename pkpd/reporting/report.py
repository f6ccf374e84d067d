"""``pkpd.report``: an HTML report of a population fit or of a forecast.

>>> fit = pkpd.load_fit("pkpd-demo/population_fit.nc")
>>> pkpd.report(fit, "report", data="data/example.csv")      # report/index.html + PNGs
>>> pkpd.report(forecast, "forecast-report")

A fit's report (:func:`report_fit`) holds: the header (model card and reference, data
set hash and shape, sampler settings, seeds, versions, wall times); the parameter table
with shrinkage and convergence statistics (:mod:`pkpd.reporting.diagnostics`); sampler
diagnostics; per output the goodness-of-fit figure (:mod:`pkpd.reporting.gof`, with
NPDE from :mod:`pkpd.reporting.npde` and ArviZ's LOO-PIT), the visual predictive checks
(:mod:`pkpd.reporting.vpc`: binned, prediction-corrected, stratified, BLQ fraction) and
the individual fits (:mod:`pkpd.reporting.individual`). Simulations come from
:mod:`pkpd.reporting.simulation` (NumPyro ``Predictive`` of the fit's model; new random
effects for VPC and NPDE). A forecast's report (:func:`report_forecast`) holds the
endpoint table and the fan charts of every patient and lineage.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PkpdError
from .html import Page, table_html

__all__ = ["report", "report_fit", "report_forecast", "strata"]


def report(obj, out_dir, data=None, **options) -> Path:
    """Write an HTML report of a :class:`~pkpd.Fit` or a :class:`~pkpd.Forecast` into ``out_dir``.

    Parameters
    ----------
    obj : Fit, Forecast, or path of a saved fit (.nc)
    out_dir : path-like
        Folder of ``index.html`` and its PNG figures (created when missing).
    data : Dataset or path, optional
        The data set of a fit read from a file (see :func:`report_fit`).
    **options
        Passed to :func:`report_fit` or :func:`report_forecast`.

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.
    """
    from ..forecasting.forecast import Forecast
    from ..infer.fit import Fit, load_fit

    if isinstance(obj, (str, Path)):
        obj = load_fit(obj)
    if isinstance(obj, Forecast):
        return report_forecast(obj, out_dir, **options)
    if isinstance(obj, Fit):
        return report_fit(obj, out_dir, data=data, **options)
    raise PkpdError(f"report() takes a Fit, a Forecast or a saved fit (.nc), got {type(obj).__name__}")


def _versions() -> list:
    import importlib.metadata as md

    from .._version import __version__

    out = [("pkpd", __version__), ("python", platform.python_version())]
    for pkg in ("jax", "numpyro", "diffrax", "arviz", "numpy", "matplotlib"):
        try:
            out.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out


def _reference(card: dict) -> str:
    ref = card.get("reference") or {}
    if isinstance(ref, dict):
        parts = [ref.get("authors"), f"({ref['year']})" if ref.get("year") else None, ref.get("title"),
                 ref.get("journal"), f"doi:{ref['doi']}" if ref.get("doi") else None]
        return ". ".join(str(p) for p in parts if p)
    return str(ref)


def strata(problem, column: str | None) -> dict:
    """``{subject ID: stratum label}`` from a subject-level column (first record), or ``"DOSE"``
    (the subject's first dose amount). More than 6 distinct numeric values are split at the median."""
    if not column:
        return {}
    df = problem.dataset.df
    if column.upper() == "DOSE":
        doses = df[df["EVID"].isin([1, 4])]
        values = doses.groupby("ID", sort=False)["AMT"].first()
        name = "first dose"
    else:
        if column not in df.columns:
            raise PkpdError(f"stratify: the data set has no column {column!r} (columns: {list(df.columns)})")
        values = df.groupby("ID", sort=False)[column].first()
        name = column
    values = values.reindex(problem.ids)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > 6:
        m = float(numeric.median())
        return {i: (f"{name} <= {m:g}" if v <= m else f"{name} > {m:g}") for i, v in numeric.items()}
    return {i: f"{name} = {v:g}" if isinstance(v, (int, float, np.number)) else f"{name} = {v}"
            for i, v in values.items()}


def _loo_idata(sim, ll, sel):
    import arviz as az

    y = sim.frame["DV"].to_numpy(float)[sel]
    return az.from_dict(posterior={"dummy": np.zeros((1, sim.ppc.shape[0]))},
                        posterior_predictive={"DV": sim.ppc[None, :, sel]},
                        log_likelihood={"DV": ll[None, :, sel]}, observed_data={"DV": y})


def report_fit(fit, out_dir, data=None, *, problem=None, draws: int = 200, seed: int = 0, n_bins: int = 8,
               bins=None, pcvpc: bool = True, stratify: str | None = None, per_page: int = 12,
               overwrite: bool = True, simulation=None) -> Path:
    """Write the report of a population fit (see the module notes).

    Parameters
    ----------
    fit : pkpd.Fit
    out_dir : path-like
    data : Dataset or path, optional
        Needed for a fit read from a file (it does not hold its data): the data set the
        fit was made from (checked against the fit's dataset hash; see
        :func:`pkpd.reporting.simulation.problem_for_fit`).
    draws : int
        Posterior draws used for predictions and simulations (evenly thinned).
    seed : int
        Seed of the simulations.
    n_bins, bins
        VPC time bins: ``n_bins`` quantile bins, or explicit edges ``bins`` (hours).
    pcvpc : bool
        Add prediction-corrected VPCs.
    stratify : str, optional
        Stratify the VPCs by a subject-level column (e.g. ``"SEX"``) or ``"DOSE"``.
    per_page : int
        Subjects per page of individual fits.
    overwrite : bool
        Replace existing files in ``out_dir``.
    simulation : PosteriorSimulation, optional
        Reuse simulations already made by :func:`pkpd.reporting.simulation.simulate_posterior`
        for this fit (``draws`` and ``seed`` are then those of the simulation).
    """
    from .diagnostics import parameter_table, sampler_figures, sampler_summary
    from .figures import new_figure
    from .gof import gof_figure
    from .individual import individual_pages
    from .npde import npde
    from .shrinkage import epsilon_shrinkage, eta_shrinkage
    from .simulation import problem_for_fit, simulate_posterior
    from .vpc import plot_blq, plot_vpc, time_bins, vpc_table

    start = time.perf_counter()
    problem = problem if problem is not None else problem_for_fit(fit, data)
    sim = simulation if simulation is not None else simulate_posterior(fit, problem, draws=draws, seed=seed)
    seed = sim.seed
    frame = sim.frame
    units = dict(getattr(problem.dataset, "units", {}) or {})

    eta_sh = dict(zip(sim.iiv, eta_shrinkage(sim.eta, sim.omega)))
    eps_sh = {o: epsilon_shrinkage(frame.loc[frame["OUTPUT"] == o, "IWRES_med"]) for o in sim.outputs}
    table = parameter_table(fit, eta_shrinkage=eta_sh, eps_shrinkage=eps_sh)

    npde_all = np.full(len(frame), np.nan)
    for o in sim.outputs:
        sel = np.flatnonzero(frame["OUTPUT"].to_numpy() == o)
        npde_all[sel] = npde(frame["ID"].to_numpy()[sel], frame["DV"].to_numpy(float)[sel], sim.sim[:, sel],
                             censored=frame["CENS"].to_numpy(bool)[sel], log=sim.error_models[o] == "log_additive")
    frame["NPDE"] = npde_all
    ll = sim.loglik

    card = fit.card or {}
    s = fit.settings
    page = Page(f"Population fit report: {fit.model_name}")
    page.section("Summary")
    df = problem.dataset.df
    n_obs = frame.groupby("OUTPUT").size().to_dict()
    n_cens = frame.groupby("OUTPUT")["CENS"].sum().to_dict()
    sampler = {k: v for k, v in s.items() if k not in ("spec",)}
    page.meta([
        ("model card", f"{fit.model_name}: {card.get('title', '')}"),
        ("reference", _reference(card) or "-"),
        ("data set", f"{problem.dataset.source}; SHA-256 {fit.dataset_hash}"),
        ("data shape", f"{len(problem.ids)} subjects, {len(df)} records, observations "
                       + ", ".join(f"{o}: {n_obs.get(o, 0)} ({int(n_cens.get(o, 0))} < LLOQ)" for o in sim.outputs)),
        ("method", f"{fit.method.upper()}; {fit!r}"),
        ("sampler / optimiser settings", json.dumps(sampler, default=str)),
        ("statistical model", json.dumps(s.get("spec", {}), default=str)),
        ("seeds", f"fit seed {s.get('seed')}; report simulations seed {seed} ({len(sim.draws)} thinned draws)"),
        ("versions", ", ".join(f"{k} {v}" for k, v in _versions())),
        ("wall time", f"fit {s.get('wall_time_s', float('nan')):.1f} s; report: see the end of the page"),
    ])
    if getattr(problem, "hash_note", None):
        page.text(f"Data check: {problem.hash_note}.", cls="note")
    flagged = table[table["problems"] != ""]
    if len(flagged):
        listed = "; ".join(f"{i}: {p}" for i, p in flagged["problems"].items())
        page.text(f"{len(flagged)} parameter(s) flagged: {listed}", cls="warn")

    page.section("Parameters")
    page.text("Posterior mean, median and 90% equal-tailed interval; relative SD = 100 sd/|mean| (RSE-like); "
              "IIV as CV% = 100 sqrt(exp(omega^2) - 1); shrinkage: eta-shrinkage on IIV rows, epsilon-shrinkage on "
              "residual rows; bulk/tail ESS and R-hat (NUTS). Highlighted rows have a problem.", cls="note")
    shown = table.rename(columns={"lo": "q5%", "hi": "q95%", "rse_pct": "rel. SD %", "cv_pct": "IIV CV %",
                                  "shrinkage_pct": "shrinkage %"})
    page.table(shown, problem_column="problems", table_id="parameters")

    page.section("Sampler diagnostics")
    summ = sampler_summary(fit)
    page.table(pd.DataFrame([{k: (", ".join(f"{b:.2f}" for b in v) if isinstance(v, list) else v)
                              for k, v in summ.items()}]), index=False, table_id="sampler")
    if fit.method != "nuts":
        page.text(f"{fit.method.upper()} draws come from an optimised approximation, not a Markov chain: ESS, R-hat, "
                  "divergences, E-BFMI and tree depth do not apply.", cls="note")
    for name, fig in sampler_figures(fit).items():
        page.figure(f"sampler-{name}", fig, alt=f"sampler diagnostics: {name}")

    groups = strata(problem, stratify)
    for o in sim.outputs:
        sel = np.flatnonzero(frame["OUTPUT"].to_numpy() == o)
        fo = frame.iloc[sel]
        cens = fo["CENS"].to_numpy(bool)
        positive = bool((fo["DV"].to_numpy(float)[~cens] > 0).all())
        unit = units.get(o, "")
        page.section(f"Goodness of fit: {o}")
        keep = sel[~cens]
        idata_o = _loo_idata(sim, ll, keep) if keep.size >= 2 else None
        try:
            fig = gof_figure(fo, o, npde_values=fo["NPDE"].to_numpy(float), idata_output=idata_o, log=positive,
                             unit=unit)
        except Exception:  # noqa: BLE001 - LOO-PIT can fail on degenerate draws; show the rest
            fig = gof_figure(fo, o, npde_values=fo["NPDE"].to_numpy(float), idata_output=None, log=positive, unit=unit)
        page.figure(f"gof-{o}", fig, alt=f"goodness of fit {o}")
        fin = fo["NPDE"].to_numpy(float)
        fin = fin[np.isfinite(fin)]
        page.text(f"NPDE ({fin.size} points, {len(sim.draws)} simulated replicates): mean {np.mean(fin):.3f}, "
                  f"SD {np.std(fin, ddof=1):.3f} (expected 0 and 1). Epsilon-shrinkage {100 * eps_sh[o]:.1f}%.",
                  cls="note")

        page.section(f"Visual predictive check: {o}")
        t = fo["TIME"].to_numpy(float)
        edges = np.asarray(bins, float) if bins is not None else time_bins(t, n_bins)
        labels = [None] if not groups else sorted(set(groups.values()))
        ncols = 1 + int(pcvpc) + int(cens.any())
        fig = new_figure(4.6 * ncols, 3.4 * len(labels) + 0.4)
        axes = fig.subplots(len(labels), ncols, squeeze=False)
        tables = []
        for r, lab in enumerate(labels):
            in_stratum = np.ones(len(fo), bool) if lab is None else \
                np.array([groups.get(i) == lab for i in fo["ID"]])
            if not in_stratum.any():
                continue
            cols = sel[in_stratum]
            args = dict(edges=edges, censored=cens[in_stratum], lloq=fo["LLOQ"].to_numpy(float)[in_stratum])
            y = fo["DV"].to_numpy(float)[in_stratum]
            tab = vpc_table(t[in_stratum], y, sim.sim[:, cols], **args)
            tables.append(tab.assign(stratum=lab or "all"))
            title = f"{o} VPC" + (f" ({lab})" if lab else "")
            plot_vpc(axes[r][0], tab, t=t[in_stratum], y=np.where(cens[in_stratum], np.nan, y), log=positive,
                     ylabel=f"{o} ({unit})" if unit else o, title=title)
            c = 1
            if pcvpc:
                pc = vpc_table(t[in_stratum], y, sim.sim[:, cols], pred=fo["PRED"].to_numpy(float)[in_stratum], **args)
                plot_vpc(axes[r][c], pc, log=positive, ylabel=f"prediction-corrected {o}",
                         title=f"{o} pcVPC" + (f" ({lab})" if lab else ""))
                c += 1
            if cens.any():
                plot_blq(axes[r][c], tab, title=f"{o} fraction below LLOQ" + (f" ({lab})" if lab else ""))
        handles, leg = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, leg, fontsize=7, loc="outside lower center", ncol=max(1, len(leg)))
        page.figure(f"vpc-{o}", fig, alt=f"visual predictive check {o}")
        page.text(f"Simulated with new random effects from {len(sim.draws)} posterior draws; time bins (h): "
                  + ", ".join(f"{e:g}" for e in edges) + ". Lines: observed 5th/50th/95th percentiles; bands: 90% "
                  "intervals of the simulated percentiles.", cls="note")
        if tables:
            vt = pd.concat(tables, ignore_index=True)
            keep_cols = [c_ for c_ in ["stratum", "lo", "hi", "n", "obs_5", "sim_5", "obs_50", "sim_50", "obs_95",
                                       "sim_95", "blq_obs", "blq_sim"] if c_ in vt]
            page.raw(table_html(vt[keep_cols], index=False, digits=3, table_id=f"vpc-table-{o}"))

        page.section(f"Individual fits: {o}")
        for k, fig in enumerate(individual_pages(sim, o, per_page=per_page, log=positive, unit=unit)):
            page.figure(f"individual-{o}-page{k + 1}", fig, alt=f"individual fits {o} page {k + 1}")

    elapsed = time.perf_counter() - start
    page.section("Run")
    page.meta([("report wall time", f"{elapsed:.1f} s (simulations {sim.timings.get('predictions_s', 0):.1f} + "
                                     f"{sim.timings.get('predictive_s', 0):.1f} s)"),
               ("written", time.strftime("%Y-%m-%d %H:%M:%S %Z"))])
    return page.write(out_dir, overwrite=overwrite)


def report_forecast(forecast, out_dir, *, overwrite: bool = True, log: bool = False) -> Path:
    """Write the report of a :class:`~pkpd.Forecast`: endpoint table and fan charts (every patient, lineage)."""
    fc = forecast
    start = time.perf_counter()
    page = Page(f"Forecast report: {fc.model_name}")
    page.section("Summary")
    page.meta([("model", fc.model_name), ("prior", fc.prior_name), ("patients", ", ".join(map(str, fc.ids))),
               ("regimens", "; ".join(map(str, fc.regimens))), ("lineages", ", ".join(fc.lineages)),
               ("interval", f"{fc.interval:.0%}"), ("horizon", f"{fc.horizon_h / 24:g} days"),
               ("draws", str(fc.trajectories.shape[0])),
               ("versions", ", ".join(f"{k} {v}" for k, v in _versions()))])
    for lin in fc.lineages:
        page.section(f"Endpoints: {lin}")
        page.table(fc.table(lin), index=False, table_id=f"endpoints-{lin}")
        page.section(f"Fan charts: {lin}", level=3)
        with tempfile.TemporaryDirectory(prefix="pkpd-report-") as tmp:
            for pid in fc.ids:
                path = Path(tmp) / "fan.png"
                fc.plot(path, patient=pid, lineage=lin, log=log)
                page.figure(f"fan-{lin}-{pid}", path.read_bytes(), alt=f"fan chart {lin} patient {pid}")
    d = fc.diagnostics or {}
    flat = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}
    problems = fc.check()
    if flat or problems:
        page.section("Diagnostics")
        for problem in problems:
            page.text(problem, cls="warn")
        if flat:
            page.raw(table_html(pd.DataFrame([flat]), index=False))
    page.section("Run")
    page.meta([("report wall time", f"{time.perf_counter() - start:.1f} s")])
    page.text("Forecast endpoints follow the forecast JSON schema of pkpd.reporting.forecast.", cls="note")
    return page.write(out_dir, overwrite=overwrite)
