"""The population model in NumPyro's terms: observation sites, their log-likelihood, failed solves,
and simulation drawing from the same residual-error distributions."""

from __future__ import annotations

import copy
import dataclasses

import jax
import numpy as np
import numpyro
import pandas as pd
import pytest
from numpyro.infer import Predictive, log_likelihood
from numpyro.infer.util import log_density
from scipy import stats

import pkpd
from pkpd.model.card import load_card
from pkpd.solve.solver import SolverOptions
from pkpd.stats.population import FitSpec, PopulationProblem

CARD = "friberg2002_docetaxel_linear"
FAST = SolverOptions(solver="rk4-grid")
DAYS = (0, 4, 7, 9, 11, 14, 21)
LLOQ = 1.0


@pytest.fixture(scope="module")
def data():
    """5 patients, 180 mg docetaxel, ANC on DAYS (simulated), counts below LLOQ = 1 censored."""
    rows = []
    for sid in range(1, 6):
        rows.append(dict(ID=sid, TIME=0.0, DV=np.nan, AMT=180.0, EVID=1, MDV=1, CMT=1, RATE=180.0, DVID=0))
        rows += [dict(ID=sid, TIME=24.0 * d + 0.5, DV=np.nan, AMT=0.0, EVID=0, MDV=0, CMT=0, RATE=0.0, DVID=2)
                 for d in DAYS[: 4 + sid % 4]]  # ragged: subjects have 4 to 7 counts
    design = pd.DataFrame(rows).assign(II=0, ADDL=0, SS=0)
    sim = pkpd.simulate(CARD, design, seed=4).drop(columns=["IPRED"])
    obs = sim["EVID"] == 0
    sim["LLOQ"] = np.where(obs, LLOQ, np.nan)
    sim["CENS"] = (obs & (sim["DV"] < LLOQ)).astype(int)
    sim.loc[sim["CENS"] == 1, "DV"] = np.where(np.arange((sim["CENS"] == 1).sum()) % 2, LLOQ, 0.0)  # DV = LLOQ or 0
    ds = pkpd.read_dataset(sim)
    assert 3 <= ds.df["CENS"].sum() <= 20
    return ds


def with_error(kind):
    card = copy.deepcopy(load_card(CARD))
    card.error["ANC"] = dataclasses.replace(card.error["ANC"], model=kind, sd=0.3, sd_add=0.4, sd_prop=0.2)
    return pkpd.Model(card)


def a_sample(problem, seed=0):
    rng = np.random.default_rng(seed)
    s = problem.initial_values()
    for k in s:
        if k.startswith("log_tv_"):
            s[k] = s[k] + rng.normal(0, 0.2)
    s["z"] = jax.numpy.asarray(rng.normal(size=s["z"].shape))
    return s


def test_observations_are_masked_sample_sites(data):
    """One observed site per output, [subjects, slots] in the subjects plate, masked to the fitted
    observations; no numpyro.factor, no imputation sites."""
    problem = PopulationProblem(pkpd.load_model(CARD), data, FitSpec(fixed=("MTT",), solver=FAST))
    trace = numpyro.handlers.trace(numpyro.handlers.substitute(problem.numpyro_model(), a_sample(problem))).get_trace()
    observed = {k: v for k, v in trace.items() if v["type"] == "sample" and v["is_observed"]}
    assert list(observed) == ["obs_ANC"]
    site = observed["obs_ANC"]
    n_slots = problem.arrays["t"].shape[1]
    assert site["value"].shape == (problem.n_real, n_slots) == (5, n_slots)
    assert {f.name: f.dim for f in site["cond_indep_stack"]} == {"subjects": -2, "slots": -1}
    assert isinstance(site["fn"], numpyro.distributions.MaskedDistribution)
    np.testing.assert_array_equal(np.asarray(site["fn"]._mask), np.asarray(problem.arrays["mask"])[:5])
    assert not [k for k, v in trace.items() if v["type"] == "sample" and k.endswith(("_unobserved", "_observed"))]
    assert not [k for k, v in trace.items() if v["type"] == "sample" and k.startswith("_")]  # factor sites
    assert np.asarray(problem.arrays["mask"]).sum() < 5 * n_slots  # padding exists and is masked


@pytest.mark.parametrize("kind,censoring", [("log_additive", "M3"), ("log_additive", "drop"), ("proportional", "M4"),
                                            ("additive", "M4"), ("combined", "M3")])
def test_pointwise_loglik_is_the_residual_model(data, kind, censoring):
    """pointwise_loglik equals the residual-error likelihood written out with SciPy (uncensored and
    censored points, M3/M4/drop) to 1e-12, and numpyro's log_likelihood of the observation site."""
    problem = PopulationProblem(with_error(kind), data, FitSpec(fixed=("MTT",), censoring=censoring, solver=FAST))
    sample = a_sample(problem, 1)
    theta, sigma = problem.params_from_sample(sample)
    ll, ok = problem.pointwise_loglik(theta, sigma)
    assert bool(np.all(np.asarray(ok)))
    a = {k: np.asarray(v) for k, v in problem.arrays.items()}
    f = np.asarray(problem.predictions(theta)[0])
    if kind == "log_additive":
        s = float(sigma["ANC"])
        with np.errstate(divide="ignore"):  # censored DV = 0: log 0, not used
            dens = stats.norm.logpdf(np.log(a["value"]), np.log(f), s)
        cens = stats.norm.logcdf(np.log(a["lloq"]), np.log(f), s)
    else:
        sd = {"proportional": lambda: float(sigma["ANC"]) * f, "additive": lambda: np.full_like(f, float(sigma["ANC"])),
              "combined": lambda: np.sqrt(float(sigma["ANC_add"]) ** 2 + (float(sigma["ANC_prop"]) * f) ** 2)}[kind]()
        dens = stats.norm.logpdf(a["value"], f, sd)
        cens = stats.norm.logcdf(a["lloq"], f, sd)
        if censoring == "M4":
            p0 = stats.norm.cdf(0.0, f, sd)
            cens = np.log((stats.norm.cdf(a["lloq"], f, sd) - p0) / (1 - p0))
    expected = np.where(a["mask"], np.where(a["cens"], cens, dens), 0.0)
    np.testing.assert_allclose(np.asarray(ll), expected, rtol=1e-12, atol=1e-12)
    n_cens = int(a["cens"].sum())
    assert n_cens == 0 if censoring == "drop" else n_cens >= 3
    dropped = int(data.df["CENS"].sum()) if censoring == "drop" else 0
    assert int(a["mask"].sum()) == int((data.df["EVID"] == 0).sum()) - dropped
    # numpyro's log_likelihood of the model's observation site: the same numbers.
    site = log_likelihood(problem.numpyro_model(), sample, batch_ndims=0)["obs_ANC"]
    np.testing.assert_allclose(np.asarray(site), np.asarray(ll)[: problem.n_real], rtol=1e-13, atol=1e-13)


def test_log_density_is_prior_plus_pointwise_loglik(data):
    """The model's log joint density = the latent sites' log densities + the sum of pointwise_loglik."""
    problem = PopulationProblem(pkpd.load_model(CARD), data, FitSpec(fixed=("MTT",), solver=FAST))
    sample = a_sample(problem, 2)
    model = problem.numpyro_model()
    total = float(log_density(model, (), {}, sample)[0])
    trace = numpyro.handlers.trace(numpyro.handlers.substitute(model, sample)).get_trace()
    prior = sum(float(np.sum(v["fn"].log_prob(v["value"]))) for v in trace.values()
                if v["type"] == "sample" and not v["is_observed"])
    ll = float(np.sum(problem.pointwise_loglik(*problem.params_from_sample(sample))[0]))
    assert total == pytest.approx(prior + ll, rel=1e-12)
    assert abs(ll) > 1.0 and abs(prior) > 1.0


def test_failed_solve_gives_minus_infinity_everywhere_it_matters(data):
    """A solve that fails (step budget exhausted): -inf pointwise log-likelihood at the fitted points
    (not NaN, no exception), -inf from numpyro's log_likelihood and log density, NaN predictive draws."""
    problem = PopulationProblem(pkpd.load_model(CARD), data, FitSpec(fixed=("MTT",), solver=SolverOptions(max_steps=3)))
    sample = a_sample(problem)
    ll, ok = problem.pointwise_loglik(*problem.params_from_sample(sample))
    ll, mask = np.asarray(ll), np.asarray(problem.arrays["mask"])
    assert not np.asarray(ok)[: problem.n_real].any()
    assert np.all(ll[mask] == -np.inf) and np.all(ll[~mask] == 0.0)
    model = problem.numpyro_model()
    assert np.all(np.asarray(log_likelihood(model, sample, batch_ndims=0)["obs_ANC"])[mask[:5]] == -np.inf)
    assert float(log_density(model, (), {}, sample)[0]) == -np.inf
    batch = {k: v[None] for k, v in sample.items()}
    draws = Predictive(model, batch, return_sites=["obs_ANC"])(jax.random.PRNGKey(0), observed=False)["obs_ANC"]
    assert np.all(np.isnan(np.asarray(draws)[0][mask[:5]]))


def test_predictive_samples_the_observation_sites(data):
    """observed=False: Predictive draws the observation sites around the predictions (posterior
    predictive); observed=True conditions them on the data."""
    problem = PopulationProblem(pkpd.load_model(CARD), data, FitSpec(fixed=("MTT",), solver=FAST))
    sample = a_sample(problem, 3)
    batch = {k: np.repeat(np.asarray(v)[None], 400, axis=0) for k, v in sample.items()}
    model = problem.numpyro_model()
    predictive = Predictive(model, batch, return_sites=["obs_ANC"])
    draws = np.asarray(predictive(jax.random.PRNGKey(1), observed=False)["obs_ANC"])
    pred = np.asarray(problem.predictions(problem.params_from_sample(sample)[0])[0])[:5]
    mask = np.asarray(problem.arrays["mask"])[:5]
    sigma = float(sample["sigma_ANC"])
    z = (np.log(draws[:, mask]) - np.log(pred[mask])) / sigma  # log-additive: standard normal
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)
    same = np.asarray(predictive(jax.random.PRNGKey(1))["obs_ANC"])
    np.testing.assert_array_equal(same[0], np.asarray(problem.arrays["value"])[:5])


def test_simulated_residuals_are_draws_of_the_fit_distributions():
    """simulate() adds residual error by sampling residual_distribution with PRNGKey(seed) (one
    subkey per output): the DV are reproduced exactly from IPRED."""
    from pkpd.stats.residual import residual_distribution

    model = pkpd.load_model(CARD)
    sim = pkpd.simulate(model, "180 mg 1h", 3, seed=11, times=np.arange(0.5, 21 * 24, 48.0))
    obs = (sim["EVID"] == 0).to_numpy()
    key = jax.random.split(jax.random.PRNGKey(11), len(model.outputs))[model.outputs.index("ANC")]
    spec = model.card.error["ANC"]
    d = residual_distribution(spec.model, jax.numpy.asarray(sim["IPRED"].to_numpy()[obs]), spec.sd)
    np.testing.assert_array_equal(sim["DV"].to_numpy()[obs], np.asarray(d.sample(key)))
    assert not np.allclose(sim["DV"].to_numpy()[obs], sim["IPRED"].to_numpy()[obs])


def test_single_dose_regimen_without_times_simulates_21_days(tmp_path):
    """`pkpd simulate MODEL --regimen "100 mg/m2 1h"` (one dose, no --times) used to raise a
    TypeError (no dosing interval): it now observes daily from day 0 to day 21 (issue 11)."""
    from pkpd.cli import main
    from pkpd.stats.simulate import DEFAULT_FOLLOW_UP_H

    out = tmp_path / "sim.csv"
    assert main(["simulate", "kloft2006_docetaxel", "--regimen", "100 mg/m2 1h", "--n", "2", "--covariates",
                 "BSA=1.8,SEX=1,PERF=0,PC=0,AAG=1.34", "--out", str(out)]) == 0
    sim = pd.read_csv(out, na_values=".")
    times = np.unique(sim.loc[sim["EVID"] == 0, "TIME"])
    np.testing.assert_array_equal(times, np.arange(0.0, DEFAULT_FOLLOW_UP_H + 1, 24.0))
    assert DEFAULT_FOLLOW_UP_H == 21 * 24
    assert sim.loc[sim["EVID"] == 1, "AMT"].gt(0).sum() == 2 and sim["DV"].notna().sum() == 2 * 22
    # With a later start the window follows the dose.
    cov = dict(BSA=1.8, SEX=1, PERF=0, PC=0, AAG=1.34)
    later = pkpd.simulate("kloft2006_docetaxel", "100 mg/m2 1h @48h", covariates=cov)
    assert later.loc[later["EVID"] == 0, "TIME"].max() == 48.0 + DEFAULT_FOLLOW_UP_H
