"""Parameterisations of the population model: the log density of every card, centred and
partially centred forms against the non-centred one, and the NUTS mass-matrix layout.

(Split from ``test_fit.py`` so that the two halves run on different test workers.)"""

from __future__ import annotations

import jax
import jax.flatten_util
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.model.card import list_cards
from pkpd.infer.fit import fit
from pkpd.solve.solver import SolverOptions
from pkpd.stats.population import FitSpec, PopulationProblem
from conftest import assert_directional_derivatives
from test_fit import CARD, FAST, study


@pytest.fixture(scope="module")
def data30():
    return study()


def _card_data(card):
    """A tiny data set (plausible constant values) that any shipped card can be fitted to."""
    from pkpd.stats.simulate import OUTPUT_DVID

    model = pkpd.load_model(card.name)
    cov = dict(SEX=1, PERF=0, PC=0, AAG=1.34, BSA=1.8, AGE=50, ALB=4.0, BASE=5.0, CL=38.0, V1=7.4, Q2=7.8,
               V2=5.2, Q3=9.3, V3=111.0, CLI=471.0, V1I=545.0, V2I=909.0, CP=0.0, WT=70.0, CONMED_PLATIN=0,
               CONMED_PLATIN_GT2=0, EASTASIAN=0, SPLEN=0)
    values = {"CONC": 0.05, "ANC": 3.0, "WBC": 5.0, "GCSF": 0.03, "PLT": 150.0, "HGB": 10.0, "EPO": 12.0}
    # Outputs without a default DVID (GCSF, EPO...) get their own, declared to read_dataset.
    dvid = dict(OUTPUT_DVID)
    extra = {10 + i: out for i, out in enumerate(o for o in model.outputs if o not in dvid)}
    dvid.update({out: k for k, out in extra.items()})
    rows = []
    for sid in (1, 2, 3):
        rows.append(dict(ID=sid, TIME=0.0, DV=np.nan, AMT=100.0, EVID=1, MDV=1, CMT=1, RATE=100.0, DVID=0))
        for out in model.outputs:
            value = values["CONC" if out.startswith("CONC") else out]
            rows += [dict(ID=sid, TIME=t, DV=value * (1 + 0.1 * sid), AMT=0.0, EVID=0, MDV=0, CMT=0,
                          RATE=0.0, DVID=dvid[out]) for t in (2.0, 72.0, 168.0, 240.0, 336.0)]
    df = pd.DataFrame(rows).sort_values(["ID", "TIME", "DVID"], kind="stable")
    for c in ("II", "ADDL", "SS"):
        df[c] = 0
    for k, v in cov.items():
        df[k] = v
    types = {d: name for name, d in OUTPUT_DVID.items()} | extra
    # 100 of the drug dosed into CMT 1 in that drug's own unit (mg, ug, IU)
    units = {s.dose_unit for s in model.card.pks if 1 in s.cmt.values()}
    units |= {q.dose_unit for s in model.card.pds for q in s.products if s.cmt.get(q.target) == 1 and q.dose_unit}
    return model, pkpd.read_dataset(df, observation_types=types if extra else None,
                                    dose_unit={1: units.pop() if units else "mg"})


def _log_density(problem):
    """(jitted value-and-grad of the log joint density in constrained space, initial values)."""
    from numpyro.infer.util import log_density

    init = problem.initial_values()
    model = problem.numpyro_model()
    flat, unravel = jax.flatten_util.ravel_pytree(init)
    f = jax.jit(jax.value_and_grad(lambda x: log_density(model, (), {}, unravel(x))[0]))
    return f, flat


@pytest.mark.parametrize("card", [c for c in list_cards()], ids=lambda c: c.name)
def test_log_density_and_gradient_at_prior_median(card):
    """Finite log density and gradient at the prior median for every card; gradient vs finite differences."""
    model, data = _card_data(card)
    tight = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=20000)  # so finite differences are not solver noise
    f, flat = _log_density(PopulationProblem(model, data, FitSpec(solver=tight)))
    value, grad = f(flat)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad)).max() > 0
    assert_directional_derivatives(f, flat, grad, n=2, seed=0)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_centred_parameterisation_is_the_same_model(data30, covariance):
    """Centred and non-centred forms give the same individual parameters and densities that
    differ by exactly the Jacobian of log_theta = mu + diag(omega) L z."""
    from numpyro.infer.util import log_density

    model = pkpd.load_model(CARD)
    kw = dict(fixed=("MTT",), covariance=covariance, solver=FAST)
    nc = PopulationProblem(model, data30, FitSpec(**kw))
    c = PopulationProblem(model, data30, FitSpec(parameterisation="centred", **kw))
    rng = np.random.default_rng(5)
    sample = nc.initial_values()
    for p in nc.iiv:
        sample[f"omega_{p}"] = jax.numpy.asarray(rng.uniform(0.1, 0.5))
    sample["z"] = jax.numpy.asarray(rng.normal(size=sample["z"].shape))
    k = len(nc.iiv)
    chol = np.eye(k)
    if covariance == "full":
        a = rng.normal(size=(k, k))
        cov = a @ a.T + np.eye(k)
        corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        chol = np.linalg.cholesky(corr)
        sample["L_corr"] = jax.numpy.asarray(chol)
    theta_nc, _ = nc.params_from_sample(sample)
    omega = np.array([float(sample[f"omega_{p}"]) for p in nc.iiv])
    csample = {key: v for key, v in sample.items() if key != "z"}
    log_tv = {p: sample[f"log_tv_{p}"] for p in c.estimated}
    csample["log_theta"] = c.mean_log_theta(log_tv) + (np.asarray(sample["z"]) @ chol.T) * omega
    theta_c, _ = c.params_from_sample(csample)
    for p in theta_nc:
        np.testing.assert_allclose(np.asarray(theta_c[p]), np.asarray(theta_nc[p]), rtol=1e-12)
    lp_nc = float(log_density(nc.numpyro_model(), (), {}, sample)[0])
    lp_c = float(log_density(c.numpyro_model(), (), {}, csample)[0])
    log_det = nc.n_real * (np.log(omega).sum() + np.log(np.diag(chol)).sum())
    assert lp_c == pytest.approx(lp_nc - log_det, rel=1e-10, abs=1e-8)
    assert abs(log_det) > 1.0  # the check can fail: the Jacobian term is not negligible


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_partial_centring_is_the_same_model(data30, covariance):
    """Partial centring (the second IIV parameter centred, the rest non-centred given it) gives the same
    individual parameters as the centred form, and its density differs from the centred one by exactly
    the Jacobian of eta_B = E[eta_B | eta_A] + chol(Sigma_B|A) z_B (conditional Gaussian, written out
    here with numpy, independently of the code's permuted Cholesky factor)."""
    from numpyro.infer.util import log_density

    model = pkpd.load_model(CARD)
    kw = dict(fixed=("MTT",), covariance=covariance, solver=FAST)
    c = PopulationProblem(model, data30, FitSpec(parameterisation="centred", **kw))
    k = len(c.iiv)
    assert k >= 2
    part = PopulationProblem(model, data30, FitSpec(parameterisation=(c.iiv[1],), **kw))
    rng = np.random.default_rng(11)
    sample = c.initial_values()
    for p in c.iiv:
        sample[f"omega_{p}"] = jax.numpy.asarray(rng.uniform(0.1, 0.5))
    omega = np.array([float(sample[f"omega_{p}"]) for p in c.iiv])
    corr = np.eye(k)
    if covariance == "full":
        a = rng.normal(size=(k, k))
        cov = a @ a.T + np.eye(k)
        corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        sample["L_corr"] = jax.numpy.asarray(np.linalg.cholesky(corr))
    sigma = np.outer(omega, omega) * corr
    log_tv = {p: sample[f"log_tv_{p}"] for p in c.estimated}
    mean = np.asarray(c.mean_log_theta(log_tv))
    eta = rng.multivariate_normal(np.zeros(k), sigma, size=c.n_real)
    csample = dict(sample, log_theta=jax.numpy.asarray(mean + eta))
    A, B = [1], [j for j in range(k) if j != 1]
    gain = sigma[np.ix_(B, A)] @ np.linalg.inv(sigma[np.ix_(A, A)])
    l_bb = np.linalg.cholesky(sigma[np.ix_(B, B)] - gain @ sigma[np.ix_(A, B)])
    z_b = np.linalg.solve(l_bb, (eta[:, B] - eta[:, A] @ gain.T).T).T
    psample = dict(sample, log_theta=jax.numpy.asarray(mean[:, A] + eta[:, A]), z=jax.numpy.asarray(z_b))
    np.testing.assert_allclose(np.asarray(part.eta_from_sample(psample)), eta, rtol=1e-10, atol=1e-12)
    theta_c, _ = c.params_from_sample(csample)
    theta_p, _ = part.params_from_sample(psample)
    for p in theta_c:
        np.testing.assert_allclose(np.asarray(theta_p[p]), np.asarray(theta_c[p]), rtol=1e-12)
    lp_c = float(log_density(c.numpyro_model(), (), {}, csample)[0])
    lp_p = float(log_density(part.numpyro_model(), (), {}, psample)[0])
    log_det = c.n_real * np.log(np.diag(l_bb)).sum()
    assert lp_p == pytest.approx(lp_c + log_det, rel=1e-10, abs=1e-8)
    assert abs(log_det) > 1.0  # the check can fail: the Jacobian term is not negligible
    # new subjects drawn from the population prior in the partial sites have covariance Sigma
    draws = jax.vmap(lambda key: part.eta_from_sample(part.new_subject_sites(psample, key)))(
        jax.random.split(jax.random.PRNGKey(0), 400))
    emp = np.cov(np.asarray(draws).reshape(-1, k).T)
    np.testing.assert_allclose(emp, sigma, atol=0.1 * sigma.diagonal().max())


MAP_KW = dict(seed=0, progress=False, fixed=("gamma", "MTT"), solver=FAST, log_likelihood=False)


@pytest.fixture(scope="module")
def map_noncentred(data30):
    """MAP fit in the default (non-centred) form: the reference of the parameterisation tests."""
    return fit(CARD, data30, method="map", **MAP_KW)


def test_partial_centring_fits_with_svi_and_map(data30, map_noncentred):
    """The partial form runs through the autoguides (its two random-effect sites share the subjects
    plate) and MAP lands on the non-centred form's typical values."""
    kw, ref = MAP_KW, map_noncentred
    part = fit(CARD, data30, method="map", parameterisation=("slope",), **kw)
    assert {"log_theta", "z"} <= set(part.idata.posterior.data_vars)
    for p in ("Circ0", "slope"):
        x, y = float(ref.idata.posterior[f"tv_{p}"].mean()), float(part.idata.posterior[f"tv_{p}"].mean())
        assert y == pytest.approx(x, rel=0.05), p
    svi = fit(CARD, data30, method="svi", svi_steps=200, svi_draws=20, parameterisation=("slope",), psis="off", **kw)
    assert np.isfinite(svi.idata.posterior["tv_slope"].values).all()


def test_partial_centring_rejects_unknown_parameters(data30):
    with pytest.raises(pkpd.ModelError, match="no IIV"):
        PopulationProblem(pkpd.load_model(CARD), data30, FitSpec(parameterisation=("MTT",), fixed=("MTT",),
                                                                 solver=FAST))
    with pytest.raises(pkpd.ModelError, match="distinct IIV parameters"):
        FitSpec(parameterisation=())


def test_centred_map_fit_matches_noncentred(data30, map_noncentred):
    """MAP in the two parameterisations lands on the same typical values (same model)."""
    a = map_noncentred
    b = fit(CARD, data30, method="map", parameterisation="centred", **MAP_KW)
    assert "log_theta" in b.idata.posterior and "z" not in b.idata.posterior
    for p in ("Circ0", "slope"):
        x, y = float(a.idata.posterior[f"tv_{p}"].mean()), float(b.idata.posterior[f"tv_{p}"].mean())
        assert y == pytest.approx(x, rel=0.05), p


def test_inverse_mass_layout_matches_numpyro():
    """The SVI variances are laid out as NUTS ravels its latent dict (sorted sites) or per dense block."""
    from pkpd.infer.fit import _inverse_mass

    var = {"b": np.arange(1.0, 7.0).reshape(2, 3), "a": np.array(10.0), "c": np.array([20.0, 21.0])}
    flat = _inverse_mass(var, False)
    np.testing.assert_array_equal(np.asarray(flat), np.asarray(jax.flatten_util.ravel_pytree(var)[0]))
    np.testing.assert_array_equal(np.asarray(_inverse_mass(var, True)), np.asarray(flat))
    blocks = _inverse_mass(var, [("c", "a")])
    assert set(blocks) == {("c", "a"), ("b",)}
    np.testing.assert_array_equal(np.asarray(blocks[("c", "a")]), np.diag([20.0, 21.0, 10.0]))
    np.testing.assert_array_equal(np.asarray(blocks[("b",)]), np.arange(1.0, 7.0))


def test_failed_solve_is_minus_infinity_not_an_exception(data30):
    """An ODE solve that fails (step budget exhausted) gives a -inf log density, not an error."""
    spec = FitSpec(fixed=("gamma", "MTT"), solver=SolverOptions(max_steps=3))
    f, flat = _log_density(PopulationProblem(pkpd.load_model(CARD), data30, spec))
    value, _ = f(flat)
    assert float(value) == -np.inf
