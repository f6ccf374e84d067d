"""PSIS check of SVI / Laplace fits (issue 17, item 4): importance ratios, Pareto k, resampling,
Fit.check warnings, determinism and the CLI line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.infer.fit import ApproximationNote, ConvergenceWarning, Fit, fit
from pkpd.infer.psis import guide_draws, log_importance_ratios, psis_diagnostics

sys.path.insert(0, str(Path(__file__).parent))
from test_fit import CARD, FAST, TRUE, card_with, study  # noqa: E402

MU = np.array([1.0, -2.0])
SIGMA = np.array([[1.0, 0.8], [0.8, 2.0]])
S_LOC, S_SD = 0.3, 0.4  # s ~ LogNormal(S_LOC, S_SD): log s ~ N(S_LOC, S_SD) in the unconstrained space


def _gaussian_model():
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MU), jnp.asarray(SIGMA)))
        numpyro.sample("s", dist.LogNormal(S_LOC, S_SD))

    return model


def _fitted_guide(guide_cls):
    """A guide for the Gaussian model (normalised, so log Z = 0), initialised by one SVI init."""
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO

    model = _gaussian_model()
    guide = guide_cls(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    params = dict(svi.get_params(svi.init(jax.random.PRNGKey(0))))
    return model, guide, params


def test_exact_full_rank_guide_gives_constant_log_weights():
    """The exact posterior as an AutoMultivariateNormal (correlated x, log-normal s whose log is
    normal): log p(u) - log q(u) is log Z = 0 at every draw to 1e-8 (Jacobian of s = exp(u)
    included), PSIS finds no tail (k = -inf) and all weights are equal."""
    from numpyro.infer.autoguide import AutoMultivariateNormal

    model, guide, params = _fitted_guide(AutoMultivariateNormal)
    # Where each site sits in the flat latent vector (the guide's own layout).
    where = {k: np.atleast_1d(np.asarray(v)).astype(int) for k, v in guide._unpack_latent(jnp.arange(3.0)).items()}
    loc, tril = np.zeros(3), np.zeros((3, 3))
    loc[where["x"]], loc[where["s"]] = MU, S_LOC
    tril[np.ix_(where["x"], where["x"])] = np.linalg.cholesky(SIGMA)
    tril[where["s"], where["s"]] = S_SD
    loc = jnp.asarray(loc)
    params.update(auto_loc=loc, auto_scale_tril=jnp.asarray(tril))
    post, log_q, unconstrained = guide_draws(guide, params, jax.random.PRNGKey(1), 500)
    log_w = log_importance_ratios(model, unconstrained, log_q)
    assert np.ptp(np.asarray(log_q)) > 1.0  # the draws differ: constancy is not trivial
    np.testing.assert_allclose(log_w, 0.0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(post["s"]), np.exp(np.asarray(unconstrained["s"])), rtol=1e-14)
    smoothed, k, ess = psis_diagnostics(log_w)
    assert k == -np.inf and ess == pytest.approx(500) and np.allclose(smoothed, -np.log(500))
    # Covariance of the draws is that of the target (the stored draws are the weighted ones).
    np.testing.assert_allclose(np.cov(np.asarray(post["x"]).T), SIGMA, rtol=0.2)


def test_exact_mean_field_guide_and_a_wrong_one():
    """AutoNormal's log q (per-site normals in the unconstrained space): exact on an independent
    target (normal x, log-normal s: log w = 0 to 1e-8); on a strongly correlated x (rho = 0.95)
    its reverse-KL optimum (the conditional SDs, far too narrow) gives varying weights and
    PSIS flags it (k > 0.7)."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    sd = np.sqrt(np.diag(SIGMA))

    def independent():
        numpyro.sample("x", dist.Normal(jnp.asarray(MU), jnp.asarray(sd)).to_event(1))
        numpyro.sample("s", dist.LogNormal(S_LOC, S_SD))

    corr = np.array([[1.0, 0.95], [0.95, 1.0]])

    def correlated():
        numpyro.sample("x", dist.MultivariateNormal(jnp.asarray(MU), jnp.asarray(corr)))

    cond_sd = 1.0 / np.sqrt(np.diag(np.linalg.inv(corr)))  # the mean-field optimum: 0.31 vs marginal 1
    for model, x_sd, exact in ((independent, sd, True), (correlated, cond_sd, False)):
        guide = AutoNormal(model)
        svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
        params = dict(svi.get_params(svi.init(jax.random.PRNGKey(0))))
        params.update({"x_auto_loc": jnp.asarray(MU), "x_auto_scale": jnp.asarray(x_sd)})
        if exact:
            params.update({"s_auto_loc": jnp.asarray(S_LOC), "s_auto_scale": jnp.asarray(S_SD)})
        post, log_q, unconstrained = guide_draws(guide, params, jax.random.PRNGKey(2), 2000)
        log_w = log_importance_ratios(model, unconstrained, log_q)
        if exact:
            np.testing.assert_allclose(log_w, 0.0, atol=1e-8)
            np.testing.assert_allclose(np.asarray(post["s"]), np.exp(np.asarray(unconstrained["s"])), rtol=1e-14)
            assert psis_diagnostics(log_w)[1] == -np.inf
        else:
            assert np.ptp(log_w) > 1.0
            k = psis_diagnostics(log_w)[1]
            assert k > 0.7, k


def test_psis_corrects_a_shifted_proposal():
    """PSIS weights of N(0.3, 1.3^2) draws for a N(0, 1) target: k < 0.5 and the weighted mean and
    SD are those of the target (to Monte Carlo error); a proposal too narrow (SD 0.3 in 4 dimensions,
    infinite-variance ratios: over 20 seeds k ranged 0.74-1.3) gives k > 0.7."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.3, 4000)
    smoothed, k, ess = psis_diagnostics(norm.logpdf(x) - norm.logpdf(x, 0.3, 1.3))
    w = np.exp(smoothed)
    assert w.sum() == pytest.approx(1.0, rel=1e-12) and k < 0.5 and 1500 < ess < 4000, (k, ess)
    mean = float(w @ x)
    assert abs(mean) < 0.06 and abs(np.sqrt(w @ (x - mean) ** 2) - 1.0) < 0.05
    y = np.random.default_rng(1).normal(0.0, 0.3, (4000, 4))
    assert psis_diagnostics((norm.logpdf(y) - norm.logpdf(y, 0.0, 0.3)).sum(axis=1))[1] > 0.7
    # Degenerate inputs: one finite ratio only.
    assert psis_diagnostics(np.array([0.0, -np.inf, -np.inf]))[1] == np.inf


@pytest.fixture(scope="module")
def fixed_effects_data():
    truth = pkpd.Model(card_with(CARD, TRUE, omega={"Circ0": 0.0, "MTT": 0.0, "slope": 0.0}, sd=0.2))
    design = study(n=8).df.drop(columns=["DV"]).assign(DV=np.nan)
    return pkpd.read_dataset(pkpd.simulate(truth, design[[c for c in design if c != "LINE"]], seed=4)
                             .drop(columns=["IPRED"]))


FE = dict(fixed=("gamma", "MTT"), iiv=(), solver=FAST, progress=False, log_likelihood=False, seed=5)


def test_full_rank_svi_on_a_near_gaussian_posterior_is_good_and_deterministic(fixed_effects_data):
    """Fixed-effects fit (3 parameters, 8 patients x 9 counts: a nearly Gaussian posterior in the
    unconstrained space): full-rank SVI and Laplace have k < 0.5 and no warning. Determinism: a
    second fit with the same seed and psis='resample' has the identical k and stores a resample
    of bit-identical guide draws (every stored value is one of the first fit's), whose mean is
    the importance-weighted mean of the first fit's draws (weights stored in sample_stats)."""
    kw = dict(FE, svi_steps=2000, learning_rate=0.02, svi_draws=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("error", ApproximationNote)
        a = fit(CARD, fixed_effects_data, method="svi", guide="mvn", **kw)
        lap = fit(CARD, fixed_effects_data, method="laplace", **kw)
    r = fit(CARD, fixed_effects_data, method="svi", guide="mvn", psis="resample", **kw)
    for res in (a, lap):
        assert res.settings["pareto_k"] < 0.5 and res.settings["psis_ess"] > 120, res.settings
        assert res.check(warn=False) == []
        assert res.diagnostics()["pareto_k"] == res.settings["pareto_k"]
    assert r.settings["pareto_k"] == a.settings["pareto_k"] and r.settings["psis"] == "resample"
    w = np.exp(a.idata.sample_stats["log_weight"].values.ravel())
    assert w.sum() == pytest.approx(1.0, rel=1e-12)
    for v in ("tv_Circ0", "tv_slope", "sigma_ANC"):
        raw = a.idata.posterior[v].values.ravel()
        got = r.idata.posterior[v].values.ravel()
        assert set(got) <= set(raw) and len(set(got)) == r.settings["psis_distinct_draws"]
        se = raw.std() / np.sqrt(a.settings["psis_ess"])
        assert abs(got.mean() - w @ raw) < 4 * se, (v, got.mean(), w @ raw, se)
    assert 80 < r.settings["psis_distinct_draws"] < 300
    assert "sample_stats" not in r.idata.groups()


def test_bad_guide_is_flagged_and_check_warns():
    """Mean-field SVI stopped after 300 steps on a hierarchical model (8 patients, IIV on Circ0 and
    slope: a posterior with strong funnel correlations) gives k > 0.7 and fit() issues the plain-
    language ConvergenceWarning; 0.5 < k <= 0.7 is only a note (nothing returned by check())."""
    data = study(n=8, seed=2)
    with pytest.warns(ConvergenceWarning, match=r"unreliable: Pareto k = .*too narrow; use method='nuts'"):
        res = fit(CARD, data, method="svi", guide="normal", svi_steps=300, svi_draws=300, seed=1, progress=False,
                  fixed=("gamma", "MTT"), solver=FAST, log_likelihood=False)
    assert res.settings["pareto_k"] > 0.7 and res.settings["psis"] == "diagnose"
    assert any("Pareto k" in p for p in res.check(warn=False))
    note = Fit(res.idata, card={}, model_name=CARD, dataset_hash="", settings=dict(res.settings, pareto_k=0.6,
                                                                                    converged=True))
    with pytest.warns(ApproximationNote, match="rough: Pareto k = 0.60"):
        assert note.check() == []
    with pytest.raises(pkpd.PkpdError, match="psis must be one of"):
        fit(CARD, data, method="svi", psis="sometimes")


def test_pareto_k_line_reads_k():
    from pkpd.cli.fit import pareto_k_line

    base = dict(method="svi", guide="mvn", svi_draws=1000, psis_ess=812.4, psis="diagnose")
    assert pareto_k_line(dict(base, pareto_k=0.31)) == (
        "PSIS check of the SVI guide 'mvn' approximation: Pareto k = 0.31, good (< 0.5); importance-sampling ESS "
        "812 of 1000 draws")
    assert "rough (0.5-0.7)" in pareto_k_line(dict(base, pareto_k=0.6))
    assert "UNRELIABLE (> 0.7)" in pareto_k_line(dict(base, pareto_k=0.71))
    assert "UNRELIABLE" in pareto_k_line(dict(base, pareto_k=float("inf")))
    assert "Laplace" in pareto_k_line(dict(base, method="laplace", pareto_k=0.2, psis="resample"))
    assert "good (< 0.5)" in pareto_k_line(dict(base, pareto_k=float("-inf")))


@pytest.mark.slow  # two fits, each compiling its own model (65 s on this 2-core CPU)
def test_cli_prints_the_pareto_k_line_and_psis_off(tmp_path, capsys):
    """`pkpd fit --method svi` prints the Pareto k line (and the warning when k > 0.7); psis='off'
    computes no k."""
    from pkpd.cli import main

    off = fit(CARD, study(n=4, seed=2), method="svi", svi_steps=50, svi_draws=20, seed=1, progress=False,
              fixed=("gamma", "MTT"), solver=FAST, log_likelihood=False, psis="off")
    assert "pareto_k" not in off.settings and "pareto_k" not in off.diagnostics()
    assert "sample_stats" not in off.idata.groups()

    out = tmp_path / "fit.nc"
    status = main(["fit", "data/example.csv", "--model", CARD, "--method", "svi", "--steps", "200", "--draws", "100",
                   "--fix", "gamma,MTT", "--solver", "rk4-grid", "--no-progress", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "PSIS check of the SVI guide 'normal' approximation: Pareto k = " in printed
    k = pkpd.load_fit(out).settings["pareto_k"]
    assert f"Pareto k = {k:.2f}" in printed
    if k > 0.7:
        assert "UNRELIABLE" in printed and "warning: the SVI approximation" in printed
