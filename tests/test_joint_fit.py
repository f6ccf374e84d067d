"""A joint fit of two outputs of a coupled model: ANC and G-CSF, with the G-CSF <-> neutrophil
feedback (PD -> PD couplings both ways), on simulated data with known truth."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpyro.infer import Predictive

import pkpd
from pkpd.dosing.events import evaluation_keys
from pkpd.infer.fit import latent_samples, observation_values, predictive_key
from pkpd.solve.solver import predict_outputs

CARD = Path(__file__).parent / "cards" / "gcsf_feedback_sim.toml"
ESTIMATED = ("Circ0", "slope", "G0")
IIV = ("Circ0", "G0")
DAYS = np.array([0, 2, 4, 6, 7, 8, 9, 10, 12, 14, 17, 21], float)


def simulate_study(model, n=8, seed=20261130):
    """Docetaxel 100 mg/m2 (BSA 1.8) 1-h infusion; ANC (DVID 2) and G-CSF (DVID 6, ng/mL) at DAYS."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        rows.append(dict(ID=i, TIME=0.0, DV=np.nan, AMT=180.0, RATE=180.0, EVID=1, MDV=1, CMT=1, DVID=0))
        for d in DAYS:
            for dvid in (2, 6):
                rows.append(dict(ID=i, TIME=d * 24, DV=1.0, AMT=0.0, RATE=0.0, EVID=0, MDV=0, CMT=2, DVID=dvid))
    df = pd.DataFrame(rows)
    for col in ("II", "ADDL", "SS"):
        df[col] = 0
    card = model.card
    typical = card.typical_values()
    eta = {p: rng.normal(0, card.parameters[p].omega, n) for p in IIV}
    theta = {p: np.full(n, v) * (np.exp(eta[p]) if p in eta else 1.0) for p, v in typical.items()}
    ds = pkpd.read_dataset(df, observation_types={2: "ANC", 6: "GCSF"}, units={"GCSF": "ng/mL"})
    canon = ds.df.reset_index(drop=True)
    ids = list(ds.ids)
    rows_obs = np.flatnonzero(canon["EVID"].to_numpy() == 0)
    t, order, row, mask = evaluation_keys(canon, rows_obs, ids)
    system, data = model.prepare(canon, ids, n_subjects=t.shape[0])
    pad = lambda v: jnp.asarray(np.concatenate([v, np.repeat(v[:1], t.shape[0] - n)]))  # noqa: E731
    out, ok, _ = predict_outputs(system, data, {p: pad(v) for p, v in theta.items()}, jnp.asarray(t),
                                 jnp.asarray(order))
    assert bool(np.all(np.asarray(ok)[:n]))
    dv = df["DV"].to_numpy(float).copy()
    raw_obs = np.flatnonzero(df["EVID"].to_numpy() == 0)
    for name, sd in (("ANC", card.error["ANC"].sd), ("GCSF", card.error["GCSF"].sd)):
        pred = np.asarray(out[name])
        sel = mask & np.isin(row, rows_obs[canon["DVID"].to_numpy()[rows_obs] == (2 if name == "ANC" else 6)])
        ipred = np.full(len(canon), np.nan)
        ipred[row[sel]] = pred[sel]
        these = raw_obs[df["DVID"].to_numpy()[raw_obs] == (2 if name == "ANC" else 6)]
        dv[these] = ipred[these] * np.exp(sd * rng.standard_normal(these.size))
    df["DV"] = dv
    return pkpd.read_dataset(df, observation_types={2: "ANC", 6: "GCSF"}, units={"GCSF": "ng/mL"}), typical


@pytest.mark.slow
def test_joint_anc_gcsf_fit_recovers_truth_and_predictive_matches():
    model = pkpd.load_model(CARD)
    ds, truth = simulate_study(model)
    biased = {p: truth[p] * 1.3 for p in ESTIMATED}  # the data, not the prior, must bring them back
    fit = pkpd.fit(model, ds, method="nuts", chains=1, warmup=150, samples=150, seed=3, progress=False,
                   init="svi", init_steps=1500, max_tree_depth=6, parameterisation="centred", iiv=IIV,
                   fixed=("gamma", "beta", "ke", "kANC", "MTT"), prior_values=biased, posterior_predictive=True)
    assert fit.problem.outputs == ("ANC", "GCSF")
    assert float(fit.summary()["ess_bulk"].min()) > 20, fit.summary()
    post = fit.idata.posterior
    for p in ESTIMATED:
        draws = np.asarray(post[f"tv_{p}"]).ravel()
        lo, hi = np.quantile(draws, [0.025, 0.975])
        assert lo <= truth[p] <= hi, f"{p}: 95% interval [{lo:.4g}, {hi:.4g}] misses {truth[p]}"
    for o in ("ANC", "GCSF"):
        draws = np.asarray(post[f"sigma_{o}"]).ravel()
        lo, hi = np.quantile(draws, [0.025, 0.975])
        assert lo <= model.card.error[o].sd <= hi, (o, lo, hi)
    # NumPyro's own Predictive on the fit's posterior reproduces its posterior predictive exactly.
    problem = fit.problem
    predictive = Predictive(problem.numpyro_model(), latent_samples(fit.idata, problem),
                            return_sites=[f"obs_{o}" for o in problem.outputs], batch_ndims=2)
    draws = predictive(predictive_key(fit.settings["seed"]), observed=False)
    again = observation_values(problem, {k: np.asarray(v) for k, v in draws.items()})
    np.testing.assert_allclose(again, np.asarray(fit.idata.posterior_predictive["DV"]), rtol=1e-10)
