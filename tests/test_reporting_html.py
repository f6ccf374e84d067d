"""Fit and forecast reports (pkpd.report, ``pkpd report``): statistics, plots, HTML, as a person sees it.

The statistics (VPC binning, prediction correction, NPDE, shrinkage, weighted residuals,
parameter table) are checked against hand computations and closed forms. The end-to-end
report uses a *known-truth* fit: data simulated from the Kloft 2006 card at known
parameters and random effects (the example data's design, 4 subjects), with a posterior
concentrated at the truth, so that the report's simulations must give NPDE ~ N(0, 1),
IPRED near the true predictions and shrinkage equal to its closed form. (A real NUTS or
SVI fit would spend minutes compiling gradients on this CPU; the report never looks at
how the draws were made.) The page is opened in headless Chromium where available.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.reporting.npde import npde, prediction_discrepancy
from pkpd.reporting.shrinkage import epsilon_shrinkage, eta_shrinkage
from pkpd.reporting.simulation import thin_indices, weighted_residual
from pkpd.reporting.vpc import assign_bins, prediction_correct, time_bins, vpc_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example.csv"


# ----------------------------------------------------------------------------- VPC
def test_time_bins_and_assignment():
    t = np.arange(0.0, 100.0)
    edges = time_bins(t, 4)
    assert edges == pytest.approx(np.quantile(t, [0, 0.25, 0.5, 0.75, 1.0]))
    b = assign_bins(t, edges)
    assert b.min() == 0 and b.max() == 3 and np.bincount(b).tolist() == [25, 25, 25, 25]
    assert assign_bins([-1.0, 99.0, 120.0], edges).tolist() == [-1, 3, -1]  # last edge closed
    assert time_bins([5.0, 5.0, 5.0], 3).tolist() == [5.0, 5.0]  # degenerate: one bin


def test_vpc_table_matches_hand_computation():
    rng = np.random.default_rng(0)
    t = np.repeat([1.0, 2.0, 3.0], 40)
    y = rng.lognormal(0.0, 0.5, t.size)
    sims = rng.lognormal(0.0, 0.5, (200, t.size))
    tab = vpc_table(t, y, sims, edges=[0.5, 1.5, 2.5, 3.5])
    assert tab["n"].tolist() == [40, 40, 40]
    for b, lo in enumerate([0.5, 1.5, 2.5]):
        sel = (t > lo) & (t < lo + 1)
        assert tab.loc[b, "obs_50"] == pytest.approx(np.quantile(y[sel], 0.5))
        q95 = np.quantile(sims[:, sel], 0.95, axis=1)
        assert tab.loc[b, "sim_95"] == pytest.approx(np.median(q95))
        assert tab.loc[b, "sim_95_lo"] == pytest.approx(np.quantile(q95, 0.05))
        assert tab.loc[b, "sim_95_hi"] == pytest.approx(np.quantile(q95, 0.95))
    # observations from the simulated distribution: observed percentiles inside the 90% bands
    # (each with probability ~0.9: at least 7 of the 9)
    inside = [(tab[f"obs_{p}"] >= tab[f"sim_{p}_lo"]) & (tab[f"obs_{p}"] <= tab[f"sim_{p}_hi"])
              for p in ("5", "50", "95")]
    assert int(np.sum(inside)) >= 7
    # a misspecified model (observations 2x higher) puts the observed median outside
    bad = vpc_table(t, 2 * y, sims, edges=[0.5, 1.5, 2.5, 3.5])
    assert np.all(bad["obs_50"] > bad["sim_50_hi"])


def test_vpc_blq_fractions_and_masking():
    t = np.repeat([1.0, 2.0], 10)
    y = np.r_[np.full(10, 5.0), np.linspace(0.1, 1.0, 10)]
    cens = np.r_[np.zeros(10, bool), np.arange(10) < 6]  # 6 of 10 below LLOQ in bin 2
    lloq = np.full(20, 0.7)
    sims = np.tile(np.r_[np.full(10, 5.0), np.linspace(0.1, 1.0, 10)], (50, 1))
    sims[:25, 10:] = 2.0  # half the replicates have nothing below the LLOQ in bin 2
    tab = vpc_table(t, y, sims, edges=[0.5, 1.5, 2.5], censored=cens, lloq=lloq)
    assert tab["blq_obs"].tolist() == pytest.approx([0.0, 0.6])
    frac = np.r_[np.zeros(25), np.full(25, np.mean(np.linspace(0.1, 1.0, 10) < 0.7))]
    assert tab.loc[1, "blq_sim"] == pytest.approx(np.median(frac))
    assert np.isnan(tab.loc[1, "obs_5"])  # the 5th percentile lies below the LLOQ: not drawn
    assert tab.loc[0, "obs_50"] == pytest.approx(5.0)


def test_prediction_correction():
    pred = np.array([1.0, 2.0, 4.0, 10.0])
    bins = np.array([0, 0, 0, 1])
    # observations proportional to the prediction become equal after correction
    pc = prediction_correct(3.0 * pred, pred, bins)
    assert pc[:3] == pytest.approx(np.full(3, 3.0 * 2.0))  # median PRED of bin 0 is 2
    assert pc[3] == pytest.approx(30.0)
    sims = np.vstack([pred, 2 * pred])
    assert prediction_correct(sims, pred, bins)[1, :3] == pytest.approx(np.full(3, 4.0))


# ----------------------------------------------------------------------------- NPDE
def test_prediction_discrepancy_by_hand():
    sims = np.arange(1.0, 11.0)[:, None]  # 10 replicates of one observation: 1..10
    assert prediction_discrepancy([4.5], sims, decorrelate=False) == pytest.approx([0.4])
    assert prediction_discrepancy([0.0], sims, decorrelate=False) == pytest.approx([1 / 20])  # clipped
    assert prediction_discrepancy([99.0], sims, decorrelate=False) == pytest.approx([1 - 1 / 20])


def _correlated(rng, n_sub, n_obs, k):
    """Subjects with AR(1)-correlated log observations (rho 0.8) and k replicates of each."""
    idx = np.arange(n_obs)
    cov = 0.3**2 * 0.8 ** np.abs(idx[:, None] - idx[None, :])
    mean = np.linspace(0.0, 2.0, n_obs)
    chol = np.linalg.cholesky(cov)
    obs = mean + rng.normal(size=(n_sub, n_obs)) @ chol.T
    sims = mean + rng.normal(size=(k, n_sub, n_obs)) @ chol.T
    return np.exp(obs.ravel()), np.exp(sims.reshape(k, -1)), np.repeat(np.arange(n_sub), n_obs)


def test_npde_standard_normal_under_the_model_and_not_otherwise():
    from scipy.stats import kstest

    rng = np.random.default_rng(42)
    y, sims, ids = _correlated(rng, 60, 8, 1000)
    v = npde(ids, y, sims, log=True)
    assert abs(v.mean()) < 0.1 and 0.9 < v.std(ddof=1) < 1.1
    assert kstest(v, "norm").pvalue > 0.01
    # decorrelation matters: without it, errors within a subject stay correlated
    w = npde(ids, y, sims, log=True, decorrelate=False).reshape(60, 8)
    d = v.reshape(60, 8)
    lag1 = lambda m: np.corrcoef(m[:, :-1].ravel(), m[:, 1:].ravel())[0, 1]  # noqa: E731
    assert lag1(w) > 0.5 and abs(lag1(d)) < 0.15
    # a model whose predictions are 30% too low gives positive NPDE
    assert npde(ids, y, sims * 0.7, log=True).mean() > 0.5
    # censored points are left out
    cens = np.zeros(y.size, bool)
    cens[:5] = True
    vc = npde(ids, y, sims, censored=cens, log=True)
    assert np.isnan(vc[:5]).all() and np.isfinite(vc[5:]).all()


# ----------------------------------------------------------------------------- shrinkage, residuals
def test_eta_shrinkage_closed_form():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(30, 2)) * [0.1, 0.4]  # posterior means of eta
    noise = rng.normal(size=(50, 30, 2))
    eta = m + np.concatenate([noise, -noise])  # antithetic: the draw means are exactly m
    omega = np.tile([0.4, 0.4], (100, 1))
    sh = eta_shrinkage(eta, omega)
    assert sh == pytest.approx(1 - m.std(axis=0, ddof=1) / 0.4, rel=1e-12)
    assert sh[0] > 0.6 and sh[1] < 0.3
    assert np.isnan(eta_shrinkage(eta[:, :1], omega)).all()  # one subject: undefined


def test_epsilon_shrinkage_and_weighted_residuals():
    r = np.random.default_rng(2).normal(size=5000)
    assert epsilon_shrinkage(0.8 * r / r.std(ddof=1)) == pytest.approx(0.2, abs=1e-12)
    assert epsilon_shrinkage(np.r_[r, np.nan]) == pytest.approx(1 - r.std(ddof=1))
    assert weighted_residual("log_additive", np.e**2, np.e, {"sigma": 0.5}) == pytest.approx(2.0)
    assert weighted_residual("proportional", 12.0, 10.0, {"sigma": 0.1}) == pytest.approx(2.0)
    assert weighted_residual("additive", 12.0, 10.0, {"sigma": 4.0}) == pytest.approx(0.5)
    got = weighted_residual("combined", 13.0, 10.0, {"sigma_add": 0.6, "sigma_prop": 0.08})
    assert got == pytest.approx(3.0 / np.hypot(0.6, 0.8))
    assert thin_indices(1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert thin_indices(3, 10).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- parameter table
def _nuts_fit(shift_chain: float = 0.0, seed: int = 0):
    """A synthetic NUTS fit (no model needed by the table and the sampler plots)."""
    import arviz as az

    from pkpd.infer.fit import Fit

    rng = np.random.default_rng(seed)
    c, d = 2, 200
    post = {"tv_A": np.exp(rng.normal(1.0, 0.1, (c, d))), "tv_B": rng.normal(5.0, 1.0, (c, d)),
            "omega_A": np.abs(rng.normal(0.3, 0.05, (c, d))), "sigma_ANC": np.abs(rng.normal(0.2, 0.01, (c, d)))}
    post["tv_B"][1] += shift_chain
    stats = {"diverging": np.zeros((c, d), bool), "energy": rng.normal(size=(c, d)),
             "tree_depth": rng.integers(2, 5, (c, d)), "acceptance_rate": rng.uniform(0.7, 0.95, (c, d))}
    stats["diverging"][0, 10] = True
    idata = az.from_dict(posterior=post, sample_stats=stats)
    return Fit(idata, card={}, model_name="synthetic", dataset_hash="0" * 64,
               settings={"method": "nuts", "seed": 0, "max_tree_depth": 4, "chains": c})


def test_parameter_table_values_and_flags():
    import arviz as az

    from pkpd.reporting.diagnostics import parameter_table, sampler_summary

    fit = _nuts_fit()
    tab = parameter_table(fit, eta_shrinkage={"A": 0.45}, eps_shrinkage={"ANC": 0.05})
    x = fit.idata.posterior["tv_A"].values
    assert tab.loc["tv_A", "mean"] == pytest.approx(x.mean())
    assert tab.loc["tv_A", "median"] == pytest.approx(np.median(x))
    assert tab.loc["tv_A", "lo"] == pytest.approx(np.quantile(x, 0.05))
    assert tab.loc["tv_A", "hi"] == pytest.approx(np.quantile(x, 0.95))
    assert tab.loc["tv_A", "rse_pct"] == pytest.approx(100 * x.std(ddof=1) / x.mean())
    assert tab.loc["tv_A", "ess_bulk"] == pytest.approx(float(az.ess(x, method="bulk")))
    assert tab.loc["tv_A", "r_hat"] == pytest.approx(float(az.rhat(x)))
    om = fit.idata.posterior["omega_A"].values
    assert tab.loc["omega_A", "cv_pct"] == pytest.approx(np.mean(100 * np.sqrt(np.expm1(om**2))))
    assert tab.loc["omega_A", "shrinkage_pct"] == pytest.approx(45.0)
    assert "shrinkage > 30%" in tab.loc["omega_A", "problems"]
    assert tab.loc["sigma_ANC", "shrinkage_pct"] == pytest.approx(5.0) and tab.loc["sigma_ANC", "problems"] == ""
    assert tab.loc["tv_A", "problems"] == ""
    # chains that disagree are flagged
    bad = parameter_table(_nuts_fit(shift_chain=3.0))
    assert bad.loc["tv_B", "r_hat"] > 1.01 and "R-hat" in bad.loc["tv_B", "problems"]
    s = sampler_summary(fit)
    assert s["divergences"] == 1 and len(s["bfmi"]) == 2 and s["max_tree_depth"] == 4
    assert s["share_at_max_depth"] == pytest.approx(np.mean(fit.idata.sample_stats["tree_depth"].values >= 4))


# ----------------------------------------------------------------------------- plots (Agg, no display)
def test_sampler_figures_and_vpc_plot_shapes():
    from pkpd.reporting.diagnostics import sampler_figures
    from pkpd.reporting.figures import new_figure
    from pkpd.reporting.vpc import plot_blq, plot_vpc

    figs = sampler_figures(_nuts_fit())
    assert set(figs) == {"rank", "energy", "divergences_tree_depth"}
    visible = [ax for ax in figs["rank"].axes if ax.get_visible()]
    assert len(visible) == 2 and {ax.get_title() for ax in visible} == {"tv_A", "tv_B"}
    ax1, ax2 = figs["divergences_tree_depth"].axes
    assert ax1.get_title() == "Divergent transitions: 1" and ax2.get_xlabel() == "tree depth"
    rng = np.random.default_rng(3)
    t = np.repeat([24.0, 48.0, 96.0], 20)
    y = rng.lognormal(0, 0.3, t.size)
    cens = y < 0.8
    tab = vpc_table(t, y, rng.lognormal(0, 0.3, (100, t.size)), n_bins=3, censored=cens,
                    lloq=np.full(t.size, 0.8))
    fig = new_figure(8, 3)
    a, b = fig.subplots(1, 2)
    plot_vpc(a, tab, t=t, y=y, log=True, ylabel="ANC (10^9/L)", title="ANC VPC")
    plot_blq(b, tab)
    assert a.get_yscale() == "log" and a.get_ylabel() == "ANC (10^9/L)" and a.get_xlabel() == "time (days)"
    assert len(a.collections) == 3  # three percentile bands
    assert b.get_ylabel() == "fraction < LLOQ" and b.get_ylim() == pytest.approx((-0.02, 1.02))


def test_html_table_and_page(tmp_path):
    from pkpd.reporting.html import Page, table_html

    df = pd.DataFrame({"mean": [1.0, np.nan], "problems": ["", "R-hat > 1.01"]},
                      index=pd.Index(["tv_<A>", "tv_B"], name="parameter"))
    html = table_html(df, problem_column="problems", table_id="parameters")
    assert html.count('class="problem"') == 1 and "tv_&lt;A&gt;" in html and 'id="parameters"' in html
    page = Page("t & t")
    page.section("Parameters")
    page.table(df, problem_column="problems")
    page.figure("a plot", b"\x89PNG fake", alt="a")
    page.figure("a plot", b"\x89PNG other", alt="b")
    out = page.write(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["a-plot-2.png", "a-plot.png", "index.html"]
    text = out.read_text()
    assert "<title>t &amp; t</title>" in text and 'href="#parameters"' in text
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from the network
    assert not list((tmp_path / "r").glob(".*"))  # no temporary file left


# ----------------------------------------------------------------------------- known-truth fit, end to end
@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """Data simulated from the Kloft 2006 card at known parameters, and a posterior at the truth."""
    import arviz as az

    from pkpd.infer.fit import Fit
    from pkpd.stats.population import FitSpec, PopulationProblem

    pkpd.enable_x64()
    folder = tmp_path_factory.mktemp("truth")
    model = pkpd.load_model("kloft2006_docetaxel")
    raw = pd.read_csv(EXAMPLE)
    raw = raw[raw["ID"].isin([1, 2, 3, 4])].reset_index(drop=True)
    design = pkpd.read_dataset(raw)
    p0 = PopulationProblem(model, design, FitSpec())
    rng = np.random.default_rng(2024)
    n, k = p0.n_real, len(p0.iiv)
    omega = np.array([model.parameters[p].omega for p in p0.iiv])
    z_true = rng.normal(size=(n, k))
    log_tv = {p: p0.prior_loc[p] for p in p0.estimated}
    theta = p0.individual(log_tv, z_true * omega)
    pred, ok = p0.predictions(theta)
    assert bool(np.all(np.asarray(ok)))
    sigma = model.card.error["ANC"].sd
    mask = np.asarray(p0.arrays["mask"])[:n]
    f_true = np.asarray(pred)[:n][mask]
    obs = p0.observed_frame()  # ID, TIME, DVID of each fitted observation, in order
    dv = f_true * np.exp(sigma * rng.normal(size=f_true.size))
    lloq = 0.08
    sim_df = raw.copy()
    sim_df["DV"] = sim_df["DV"].astype(object)
    key = list(zip(raw["ID"], raw["TIME"], raw["DVID"], raw["EVID"]))
    lines = np.array([key.index((i, t, d, 0)) for i, t, d in zip(obs["ID"], obs["TIME"], obs["DVID"])])
    sim_df.loc[lines, "DV"] = np.round(dv, 6)
    sim_df["BLQ"] = 0
    sim_df["LLOQ"] = np.where(sim_df["DVID"] == 2, lloq, np.nan)  # ANC only
    below = lines[dv < lloq]
    sim_df.loc[below, "BLQ"] = 1
    csv = folder / "truth.csv"
    sim_df.to_csv(csv, index=False)
    data = pkpd.read_dataset(csv)
    problem = PopulationProblem(model, data, FitSpec())
    c, d = 2, 50
    post = {}
    for p in problem.estimated:
        post[f"log_tv_{p}"] = problem.prior_loc[p] + 0.01 * rng.normal(size=(c, d))
        post[f"tv_{p}"] = np.exp(post[f"log_tv_{p}"])
    for j, p in enumerate(problem.iiv):
        post[f"omega_{p}"] = omega[j] * np.exp(0.03 * rng.normal(size=(c, d)))
    post["z"] = z_true + 0.05 * rng.normal(size=(c, d, n, k))
    post["sigma_ANC"] = sigma * np.exp(0.03 * rng.normal(size=(c, d)))
    stats = {"diverging": np.zeros((c, d), bool), "energy": rng.normal(size=(c, d)),
             "tree_depth": rng.integers(3, 6, (c, d))}
    idata = az.from_dict(posterior=post, sample_stats=stats,
                         observed_data={"DV": problem.observed_frame()["DV"].to_numpy(float)})
    settings = {"method": "nuts", "seed": 5, "chains": c, "warmup": 0, "samples": d, "max_tree_depth": 10,
                "spec": FitSpec().as_dict(), "wall_time_s": 0.0}
    fit = Fit(idata, card=model.card.raw, model_name=model.name, dataset_hash=data.hash, settings=settings,
              problem=problem)
    truth_frame = pd.DataFrame({"ID": obs["ID"].to_numpy(), "TIME": obs["TIME"].to_numpy(), "F": f_true})
    from pkpd.reporting.simulation import simulate_posterior

    sim = simulate_posterior(fit, problem, draws=60, seed=1)  # compiled once, shared with the report
    return {"fit": fit, "problem": problem, "sim": sim, "csv": csv, "z": z_true, "omega": omega, "truth": truth_frame,
            "n_blq": int((dv < lloq).sum()), "folder": folder}


@pytest.fixture(scope="module")
def report_dir(truth):
    out = truth["folder"] / "report"
    t0 = time.perf_counter()
    index = pkpd.report(truth["fit"], out, simulation=truth["sim"], stratify="SEX")
    truth["report_s"] = time.perf_counter() - t0
    return index


def test_simulation_recovers_the_truth(truth):
    fit = truth["fit"]
    sim = truth["sim"]
    fr = sim.frame.merge(truth["truth"], on=["ID", "TIME"])
    assert len(fr) == len(sim.frame) == 84
    rel = np.abs(fr["IPRED"] / fr["F"] - 1)
    assert rel.max() < 0.05  # posterior at the truth: IPRED = the true prediction
    assert fr["CENS"].sum() == truth["n_blq"]
    # residuals from the true model are standard normal
    r = fr["IWRES_med"].to_numpy()[~fr["CENS"].to_numpy(bool)]
    assert abs(r.mean()) < 0.3 and 0.75 < r.std(ddof=1) < 1.25
    # NPDE from the new-subject simulations ~ N(0, 1)
    v = npde(fr["ID"].to_numpy(), fr["DV"].to_numpy(float), sim.sim, censored=fr["CENS"].to_numpy(bool), log=True)
    v = v[np.isfinite(v)]
    assert abs(v.mean()) < 0.3 and 0.7 < v.std(ddof=1) < 1.3
    # new random effects have the population spread: log(sim/ipred-free) varies more than ppc
    cens = fr["CENS"].to_numpy(bool)
    spread_new = np.log(sim.sim[:, ~cens]).std(axis=0).mean()
    spread_ppc = np.log(sim.ppc[:, ~cens]).std(axis=0).mean()
    sigma = truth["problem"].model.card.error["ANC"].sd
    assert spread_ppc == pytest.approx(sigma, rel=0.15) and spread_new > spread_ppc * 1.05
    # eta-shrinkage: closed form from the draws
    eta = fit.idata.posterior["z"].values.reshape(-1, 4, 3) * np.stack(
        [fit.idata.posterior[f"omega_{p}"].values.ravel() for p in sim.iiv], axis=-1)[:, None, :]
    om = np.stack([fit.idata.posterior[f"omega_{p}"].values.ravel() for p in sim.iiv], axis=-1)
    expected = 1 - eta.mean(axis=0).std(axis=0, ddof=1) / om.mean(axis=0)
    assert eta_shrinkage(sim.eta, sim.omega) == pytest.approx(expected, rel=1e-9)
    # the log-likelihood matches the residual model written out here (censored: M3)
    from scipy.stats import norm

    y = fr["DV"].to_numpy(float)
    sig = fit.idata.posterior["sigma_ANC"].values.ravel()[sim.draws][:, None]
    ll_obs = norm.logpdf(np.log(y[~cens]), np.log(sim.ipred[:, ~cens]), sig)
    assert sim.loglik[:, ~cens] == pytest.approx(ll_obs, rel=1e-9, abs=1e-9)
    if cens.any():
        ll_c = norm.logcdf((np.log(0.08) - np.log(sim.ipred[:, cens])) / sig)
        assert sim.loglik[:, cens] == pytest.approx(ll_c, rel=1e-9, abs=1e-9)


def test_report_contents(report_dir, truth):
    html = report_dir.read_text()
    folder = report_dir.parent
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 5 and all((folder / i).is_file() and (folder / i).stat().st_size > 5000 for i in images)
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(images)
    assert 'id="parameters"' in html and "tv_Circ0" in html and "omega_slope" in html and "sigma_ANC" in html
    for section in ("Summary", "Parameters", "Sampler diagnostics", "Goodness of fit: ANC",
                    "Visual predictive check: ANC", "Individual fits: ANC"):
        assert f">{section}</h2>" in html
    assert truth["fit"].dataset_hash in html and "kloft2006_docetaxel" in html and "Kloft C" in html
    assert "SEX = 1" in html or "SEX = 2" in html  # stratified VPC table
    assert {"sampler-rank.png", "sampler-energy.png", "gof-anc.png", "vpc-anc.png",
            "individual-anc-page1.png"} <= set(images)
    print(f"report of the known-truth fit: {truth['report_s']:.1f} s, {len(images)} images")


def test_forecast_report(tmp_path):
    from pkpd.forecasting.forecast import Forecast
    from pkpd.reporting.forecast import patient_summary

    t = np.arange(0.0, 21 * 24 + 1, 6.0)
    rng = np.random.default_rng(0)
    y = 5.0 - 4.5 * np.exp(-((t[None, :] - 200.0) ** 2) / 5000.0) * rng.uniform(0.6, 1.0, (100, 1))
    entries = [patient_summary(t, y, patient_id=7, regimen=name) for name in ("100 mg/m2", "80 mg/m2")]
    fc = Forecast(entries=entries, trajectories=np.stack([y, y * 1.1], axis=1)[:, None], time_h=t,
                  draws=pd.DataFrame(), ids=[7], regimens=["100 mg/m2", "80 mg/m2"], after=np.zeros((1, 2)),
                  diagnostics={"method": "laplace", "inference_s": 1.0}, model_name="kloft2006_docetaxel",
                  prior_name="card", interval=0.9, horizon_h=504.0, lineage="ANC",
                  observed={7: (np.array([0.0, 48.0]), np.array([5.0, 4.0]))}, context={})
    index = pkpd.report(fc, tmp_path / "fc")
    html = index.read_text()
    assert 'id="endpoints-ANC"' in html and "nadir_median" in html and "80 mg/m2" in html
    assert (tmp_path / "fc" / "fan-anc-7.png").stat().st_size > 5000


def test_data_matched_by_hash_or_by_observations(truth):
    from pkpd.infer.fit import Fit
    from pkpd.reporting.simulation import problem_for_fit

    f = truth["fit"]
    saved = Fit(f.idata, card=f.card, model_name=f.model_name, dataset_hash=f.dataset_hash, settings=f.settings)
    assert problem_for_fit(saved, truth["csv"]).n_real == 4  # same hash
    # other unit metadata (CONC in ug/L, not fitted): the hash differs, the fitted ANC values do not
    other = pkpd.read_dataset(truth["csv"], units={"CONC": "ug/L"})
    assert other.hash != f.dataset_hash
    problem = problem_for_fit(saved, other)
    assert "differs from the fit's" in problem.hash_note
    # one ANC value changed: refused
    df = pd.read_csv(truth["csv"], dtype={"DV": object})
    k = df.index[(df["DVID"] == 2) & (df["EVID"] == 0) & (df["BLQ"] == 0)][3]
    df.loc[k, "DV"] = str(float(df.loc[k, "DV"]) * 1.01)
    with pytest.raises(pkpd.PkpdError, match="does not match the fit"):
        problem_for_fit(saved, pkpd.read_dataset(df))


# ----------------------------------------------------------------------------- CLI
def test_cli_report_errors(tmp_path, truth, capsys):
    from pkpd.cli import main

    assert main(["report", str(tmp_path / "none.nc"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    nc = tmp_path / "fit.nc"
    truth["fit"].save(nc)
    # data that are not the fit's: clear message, exit 2, nothing written
    assert main(["report", str(nc), "--data", str(EXAMPLE), "--out", str(tmp_path / "r")]) == 2
    assert "does not match the fit" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    (tmp_path / "file").write_text("x")
    assert main(["report", str(nc), "--data", str(truth["csv"]), "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["report", str(nc), "--data", str(truth["csv"]), "--out", str(tmp_path / "r"),
                 "--bin-edges", "5,1"]) == 2
    assert "increasing" in capsys.readouterr().err


@pytest.mark.slow  # reason: a second compile of the simulation program for the rebuilt problem (~20-40 s)
def test_cli_report_writes_the_page(tmp_path, truth, capsys):
    from pkpd.cli import main

    nc = tmp_path / "fit.nc"
    truth["fit"].save(nc)
    out = tmp_path / "cli-report"
    assert main(["report", str(nc), "--data", str(truth["csv"]), "--out", str(out), "--draws", "40",
                 "--bin-edges", "0,48,150,250,400,550,700,1008"]) == 0
    assert "wrote" in capsys.readouterr().out
    html = (out / "index.html").read_text()
    assert "0, 48, 150" in html and 'id="parameters"' in html
    assert main(["report", str(nc), "--data", str(truth["csv"]), "--out", str(out), "--no-clobber"]) == 2


# ----------------------------------------------------------------------------- headless Chromium
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  var out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = 'IMAGES ' + imgs.length + ' BROKEN ' + broken.length + ' ' +
    broken.map(function (i) { return i.getAttribute('src'); }).join(',') +
    ' TABLE ' + (document.querySelector('table#parameters tbody tr') ? 'yes' : 'no');
  document.body.appendChild(out);
});
</script>
"""


def _run_chromium(browser, args, timeout=90):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--allow-file-access-from-files", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_report_in_headless_chromium(report_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium not found (install Debian's `chromium` package; .ci/run does when it can)")
    folder = report_dir.parent
    html = report_dir.read_text()
    check = folder / "check.html"  # the page plus a script that marks images that did not load
    check.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    try:
        dom = _run_chromium(browser, ["--dump-dom", check.as_uri()])
        shot = tmp_path / "report.png"
        _run_chromium(browser, [f"--screenshot={shot}", "--window-size=1280,2400", report_dir.as_uri()])
    finally:
        check.unlink()
    m = re.search(r"IMAGES (\d+) BROKEN (\d+) (\S*) ?TABLE (\w+)", dom.stdout)
    assert m, f"no image check in Chromium's DOM (rc {dom.returncode}): {dom.stderr[-500:]}"
    n_images, n_broken, broken, table = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    assert n_images == html.count("<img ") and n_images >= 5
    assert n_broken == 0, f"broken images: {broken}"
    assert table == "yes"
    assert shot.is_file() and shot.stat().st_size > 20000  # a rendered page, not a blank one
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        colours = im.convert("L").getextrema()
    assert colours[0] < 60 and colours[1] > 200  # text and background both present


def test_broken_image_is_detected(report_dir, tmp_path):
    """The Chromium check can fail: a page with a missing image is caught."""
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium not found (install Debian's `chromium` package)")
    folder = tmp_path / "broken"
    shutil.copytree(report_dir.parent, folder)
    (folder / "vpc-anc.png").unlink()
    page = folder / "index.html"
    page.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = _run_chromium(browser, ["--dump-dom", page.as_uri()])
    m = re.search(r"BROKEN (\d+) (\S*)", dom.stdout)
    assert m and int(m.group(1)) == 1 and m.group(2) == "vpc-anc.png"


if os.environ.get("PKPD_KEEP_REPORT"):  # pragma: no cover - debugging aid
    @pytest.fixture(scope="module", autouse=True)
    def _keep(report_dir):
        yield
        shutil.copytree(report_dir.parent, os.environ["PKPD_KEEP_REPORT"], dirs_exist_ok=True)
