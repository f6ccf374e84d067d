"""Myelosuppression models: steady state, solver accuracy, gradients, published behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pkpd.model.card import list_cards
from pkpd.model.pk.drivers import KPD, ClosedFormPK, ConcentrationColumn
from pkpd.model.model import load_model
from pkpd.model.pd.effects import drug_effect
from pkpd.model.pd.friberg import Friberg
from pkpd.stats.simulate import simulate, solve_design
from pkpd.model.system import pk_pd_system
from pkpd.solve.solver import SolverOptions, predict_outputs, prepare_subjects

BSA = 1.8
# Docetaxel 3-cmt PK (Bruno 1996 as re-implemented in radivot/myelo; MODELS.md 1.2).
V1 = 7.4
DOCETAXEL_PK = dict(CL=5.2 * V1, V1=V1, Q2=1.06 * V1, V2=1.06 * V1 / 1.51, Q3=1.26 * V1, V3=1.26 * V1 / 0.084)
TYPICAL_COV = dict(SEX=1, PERF=0, PC=0, AAG=1.34, BSA=BSA, AGE=50, ALB=4.0, BASE=5.0, CL=38.0, V1=7.4, Q2=7.8,
                   V2=5.2, Q3=9.3, V3=111.0, CLI=471.0, V1I=545.0, V2I=909.0, WT=70.0, CONMED_PLATIN=0,
                   CONMED_PLATIN_GT2=0, EASTASIAN=0, SPLEN=0)


def design(doses=(), times=np.arange(0.0, 60 * 24 + 1, 12.0), dvid=2, ids=(1,), extra=None):
    """NONMEM frame: dose tuples (time, amt, rate) and observations of DVID ``dvid``."""
    rows = []
    for sid in ids:
        for t in times:
            rows.append(dict(ID=sid, TIME=float(t), DV=np.nan, AMT=0.0, EVID=0, MDV=1, CMT=0, RATE=0.0, II=0.0,
                             ADDL=0, SS=0, DVID=dvid, _k=0))
        for t, amt, rate in doses:
            rows.append(dict(ID=sid, TIME=float(t), DV=np.nan, AMT=amt, EVID=1, MDV=1, CMT=1, RATE=rate, II=0.0,
                             ADDL=0, SS=0, DVID=0, _k=1))
    df = pd.DataFrame(rows).sort_values(["ID", "TIME", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)
    for k, v in {**TYPICAL_COV, **(extra or {})}.items():
        df[k] = v
    return df


def typical_theta(model, df):
    ids = list(pd.unique(df["ID"]))
    return model.individual_parameters(model.subject_covariates(df, ids), n=len(ids))


@pytest.mark.parametrize("card", [c.name for c in list_cards()])
def test_no_drug_steady_state_every_card(card):
    """No dose: every PD state stays at its steady state to 1e-9 relative over 60 days."""
    model = load_model(card)
    out_name = [o for o in model.outputs if o != "CONC"][0]
    from pkpd.stats.simulate import OUTPUT_DVID

    df = design(doses=(), dvid=OUTPUT_DVID[out_name], extra={"CP": 0.0})
    theta = typical_theta(model, df)
    dyn = model.dynamics_for(df)
    data = prepare_subjects(dyn, df)
    th = {k: jnp.asarray(np.asarray(v, float)) for k, v in theta.items()}
    from pkpd.solve.solver import solve_batch_jit

    ts = jnp.asarray(df["TIME"].to_numpy()[None, :])
    states, ok, _ = solve_batch_jit(dyn, data, th, ts, model.solver_options())
    y0 = dyn.flatten(dyn.initial_state({k: v[0] for k, v in th.items()}))
    assert bool(ok[0])
    # relative to each state's value (absolute for states that are 0 at rest: drug amounts, transfused cells)
    y0 = np.asarray(y0)
    diff = np.abs(np.asarray(states[0]) - y0)
    rel = np.max(np.where(y0 != 0, diff / np.where(y0 != 0, np.abs(y0), 1.0), diff))
    assert rel < 1e-9, f"{card}: states drift by {rel:.2e} relative without drug"


def test_default_solver_is_the_cards_integrator_in_simulations_fits_and_forecasts():
    """``SolverOptions()`` says ``solver="auto"``: simulations, population fits and forecasts take
    the card's recommended integrator (Kvaerno5 for the stiff Quartino G-CSF feedback card; before,
    the card's advice was ignored and Tsit5 forecasts of such patients failed their mode search),
    Tsit5 for cards that name none, and a solver named explicitly is kept."""
    import pkpd
    from pkpd.forecasting.forecast import _forecast_solvers
    from pkpd.stats.population import FitSpec, PopulationProblem

    stiff, plain = load_model("quartino2014_docetaxel_gcsf"), load_model("kloft2006_docetaxel")
    assert stiff.card.solver == "kvaerno5" and not plain.card.solver
    assert SolverOptions().solver == "auto"
    assert stiff.solver_options().solver == "kvaerno5" and plain.solver_options().solver == "tsit5"
    assert stiff.solver_options(SolverOptions(solver="tsit5")).solver == "tsit5"
    assert stiff.solver_options(SolverOptions(rtol=1e-5)).rtol == 1e-5

    times = np.arange(0.0, 15 * 24 + 1, 24.0)
    run = lambda **kw: simulate(stiff, "docetaxel 100 mg/m2 1h", covariates={"BSA": BSA}, times=times,  # noqa: E731
                                iiv=False, residual=False, **kw)["IPRED"].to_numpy()
    default = run()
    kvaerno, tsit = run(options=SolverOptions(solver="kvaerno5")), run(options=SolverOptions(solver="tsit5"))
    np.testing.assert_array_equal(default, kvaerno)
    assert not np.array_equal(default, tsit)

    ds = pkpd.read_dataset(simulate(stiff, "docetaxel 100 mg/m2 1h", covariates={"BSA": BSA}, times=times[:8],
                                    iiv=False).drop(columns="IPRED"))
    assert PopulationProblem(stiff, ds, FitSpec()).solver.solver == "kvaerno5"
    assert PopulationProblem(stiff, ds, FitSpec(solver=SolverOptions(solver="tsit5"))).solver.solver == "tsit5"
    for asked in (None, SolverOptions(), SolverOptions(solver="rk4-grid")):
        inference, trajectories = _forecast_solvers(stiff, asked)
        assert trajectories.solver == "kvaerno5" and trajectories.adjoint == "forward"
        assert inference.solver == ("rk4-grid" if asked is not None and asked.solver == "rk4-grid" else "kvaerno5")
    assert _forecast_solvers(plain, None)[0].solver == "tsit5"


def _kloft_cycles(n_cycles):
    return [(21 * 24.0 * c, 100 * BSA, 100 * BSA) for c in range(n_cycles)]


@pytest.mark.parametrize("n_cycles", [1, 3])
def test_default_tolerances_against_tight_reference(n_cycles):
    """Default solver settings vs rtol 1e-12: circulating count within 1e-5 relative."""
    model = load_model("kloft2006_docetaxel")
    df = design(doses=_kloft_cycles(n_cycles), times=np.arange(0.0, 21 * 24 * n_cycles + 1, 1.0))
    theta = typical_theta(model, df)
    default, ok, steps = solve_design(model, df, theta)
    tight, ok2, steps2 = solve_design(model, df, theta, SolverOptions(rtol=1e-12, atol=1e-14, max_steps=200_000))
    assert ok.all() and ok2.all()
    obs = df["EVID"].to_numpy() == 0
    rel = np.max(np.abs(default[obs] - tight[obs]) / tight[obs])
    assert rel < 1e-5, f"max relative error {rel:.2e} with {steps} steps"
    assert steps2[0] > 3 * steps[0]  # the reference really is a different, tighter solve


def test_published_kloft_recovery_and_friberg_nadir():
    """MODELS.md 9.2 and 9.3: Kloft typical patient back to baseline on day 17 +/- 1;
    Friberg 2002 docetaxel linear set: nadir between day 6.5 and 9 (100 mg/m2, 1-h infusion, BSA 1.8)."""
    times = np.arange(0.0, 30 * 24 + 1, 0.5)
    df = design(doses=[(0.0, 100 * BSA, 100 * BSA)], times=times)
    kloft = load_model("kloft2006_docetaxel")
    anc, _, _ = solve_design(kloft, df, typical_theta(kloft, df))
    anc = anc[df["EVID"].to_numpy() == 0]
    base = 5.22
    nadir = np.argmin(anc)
    back = times[nadir:][np.argmax(anc[nadir:] >= base)] / 24
    assert 16.0 <= back <= 18.0, back
    assert 8.0 <= times[nadir] / 24 <= 9.0 and 0.15 < anc[nadir] < 0.3  # MODELS.md [D]: day 8.4, 0.22

    friberg = load_model("friberg2002_docetaxel_linear")
    anc, _, _ = solve_design(friberg, df, typical_theta(friberg, df))
    anc = anc[df["EVID"].to_numpy() == 0]
    t_nadir = times[np.argmin(anc)] / 24
    assert 6.5 <= t_nadir <= 9.0, t_nadir
    assert 0.8 < anc.min() < 1.0  # MODELS.md [D]: 0.90 x10^9/L


def test_gradients_match_finite_differences():
    """d(counts)/d(parameter) for every parameter of the Kloft model, by finite differences."""
    model = load_model("kloft2006_docetaxel")
    df = design(doses=[(0.0, 180.0, 180.0)], times=np.array([0.0, 72.0, 168.0, 240.0, 400.0]))
    dyn = model.dynamics_for(df)
    data = prepare_subjects(dyn, df)
    base = {k: float(np.asarray(v)[0]) for k, v in typical_theta(model, df).items()}
    t = jnp.asarray(df["TIME"].to_numpy()[df["EVID"].to_numpy() == 0][None, :])
    order = jnp.full_like(t, jnp.inf)
    opts = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=20000)

    def counts(logp):
        theta = {k: jnp.exp(logp[i])[None] for i, k in enumerate(base)}
        out, _, _ = predict_outputs(dyn, data, theta, t, order, opts)
        return out["ANC"][0]

    x0 = jnp.log(jnp.asarray(list(base.values())))
    jac = np.asarray(jax.jacrev(counts)(x0))
    h = 1e-5
    for i, name in enumerate(base):
        e = np.zeros(len(base))
        e[i] = h
        fd = (np.asarray(counts(x0 + e)) - np.asarray(counts(x0 - e))) / (2 * h)
        np.testing.assert_allclose(jac[:, i], fd, rtol=2e-4, atol=1e-7, err_msg=name)
    assert np.abs(jac).max() > 0.1


def _friberg_solve(system, driver, theta, df, opts=SolverOptions()):
    dyn = pk_pd_system(driver, system, 1000 / 808)
    data = prepare_subjects(dyn, df)
    rows = df["EVID"].to_numpy() == 0
    t = jnp.asarray(df["TIME"].to_numpy()[rows][None, :])
    th = {k: jnp.asarray([v]) for k, v in theta.items()}
    out, ok, steps = predict_outputs(dyn, data, th, t, jnp.full_like(t, jnp.inf), opts)
    assert bool(ok[0])
    return {k: np.asarray(v[0]) for k, v in out.items()}


KLOFT = dict(Circ0=5.22, MTT=84.2, gamma=0.1445, slope=15.57)


def test_stem_cell_variant_reduces_to_friberg_and_accumulates():
    """Henrich 2017: ftr -> 1 is the Friberg model; with ftr < 1 toxicity accumulates over cycles."""
    df = design(doses=_kloft_cycles(3), times=np.arange(0.0, 63 * 24 + 1, 6.0))
    pk = ClosedFormPK("3cmt", False, (), False)
    plain = _friberg_solve(Friberg(), pk, {**DOCETAXEL_PK, **KLOFT}, df)["ANC"]
    one = _friberg_solve(Friberg(stem_cell=True), pk, {**DOCETAXEL_PK, **KLOFT, "ftr": 1.0}, df)["ANC"]
    np.testing.assert_allclose(one, plain, rtol=1e-6)
    stem = _friberg_solve(Friberg(stem_cell=True), pk, {**DOCETAXEL_PK, **KLOFT, "ftr": 0.7}, df)["ANC"]
    t = df["TIME"].to_numpy()[df["EVID"].to_numpy() == 0]
    nadirs = [stem[(t >= 504 * c) & (t < 504 * (c + 1))].min() for c in range(3)]
    plain_nadirs = [plain[(t >= 504 * c) & (t < 504 * (c + 1))].min() for c in range(3)]
    assert nadirs[2] < nadirs[0] * 0.95, nadirs  # cumulative neutropenia
    assert abs(plain_nadirs[2] / plain_nadirs[0] - 1) < abs(nadirs[2] / nadirs[0] - 1)


def test_dexamethasone_input_matches_closed_form():
    """Ozawa 2007 term with no drug effect and no feedback: Circ - Circ0 has a closed form."""
    df = design(doses=[(0.0, 100.0, 100.0)], times=np.arange(0.0, 240.0, 2.0))
    theta = {**DOCETAXEL_PK, "Circ0": 4.0, "MTT": 100.0, "gamma": 0.0, "slope": 0.0, "IP0": 5.19, "MIT": 35.5}
    anc = _friberg_solve(Friberg(dexamethasone=True), ClosedFormPK("3cmt", False, (), False), theta, df)["ANC"]
    t = df["TIME"].to_numpy()[df["EVID"].to_numpy() == 0]
    ktr, kin = 4 / 100.0, 1 / 35.5
    expected = 4.0 + kin * 5.19 * (np.exp(-kin * t) - np.exp(-ktr * t)) / (ktr - kin)
    np.testing.assert_allclose(anc, expected, rtol=1e-6)


def test_separate_kcirc_steady_state_and_effect():
    system = Friberg(separate_kcirc=True, output="PLT")
    theta = {"Circ0": 250.0, "MTT": 120.0, "gamma": 0.2, "slope": 1.0, "kcirc": 0.01}
    y0 = np.asarray(system.initial_state(theta))
    np.testing.assert_allclose(y0[:-1], 250.0 * 0.01 / (4 / 120.0))
    dy = system.vector_field(0.0, jnp.asarray(y0), theta, {"drug": 0.0}, None)
    assert np.max(np.abs(np.asarray(dy))) < 1e-12 * 250


def test_drug_effect_forms():
    th = {"slope": 0.5, "Emax": 0.9, "EC50": 2.0, "hill": 2.0, "alpha": 0.3, "beta": 0.5}
    assert float(drug_effect("linear", 4.0, th)) == pytest.approx(2.0)
    assert float(drug_effect("capped_linear", 4.0, th)) == pytest.approx(1.0)
    assert float(drug_effect("emax", 2.0, th)) == pytest.approx(0.45)
    assert float(drug_effect("sigmoid_emax", 4.0, th)) == pytest.approx(0.9 * 4 / 5)
    assert float(drug_effect("power", 4.0, th)) == pytest.approx(0.6)
    for kind in ("linear", "capped_linear", "emax", "sigmoid_emax", "power"):
        assert float(drug_effect(kind, 0.0, th)) == 0.0
        g = jax.grad(lambda c: drug_effect(kind, c, th))(0.0)
        assert np.isfinite(float(g))
    with pytest.raises(ValueError, match="n_transit"):
        Friberg(n_transit=0)


def test_drivers_agree():
    """K-PD equals 1-cmt PK with V = 1, CL = KDE; an interpolated concentration column
    reproduces the closed-form PK it was sampled from."""
    df = design(doses=[(0.0, 180.0, 180.0), (504.0, 180.0, 180.0)], times=np.arange(0.0, 42 * 24 + 1, 6.0))
    pdt = dict(KLOFT)
    kpd = _friberg_solve(Friberg(), KPD(), {**pdt, "KDE": 0.05, "slope": 0.002}, df)
    one = _friberg_solve(Friberg(), ClosedFormPK("1cmt"), {**pdt, "CL": 0.05, "V1": 1.0, "slope": 0.002}, df)
    np.testing.assert_allclose(kpd["ANC"], one["ANC"], rtol=1e-9)

    pk = ClosedFormPK("3cmt", False, (), False)
    closed = _friberg_solve(Friberg(), pk, {**DOCETAXEL_PK, **pdt}, df)
    from pkpd.model.pk.predict import predict_pk

    doses = [(0.0, 180.0, 180.0), (504.0, 180.0, 180.0)]
    fine = np.arange(0.0, 42 * 24 + 1, 0.05)
    cp = predict_pk(design(doses=doses, times=fine, dvid=1), "3cmt", DOCETAXEL_PK)
    samples = pd.DataFrame(dict(ID=1, TIME=fine, DV=np.nan, AMT=0.0, EVID=2, MDV=1, CMT=0, RATE=0.0, II=0.0,
                                ADDL=0, SS=0, DVID=0, CP=cp))
    frame = pd.concat([df.assign(CP=np.nan), samples]).sort_values("TIME", kind="stable").reset_index(drop=True)
    interp = _friberg_solve(Friberg(), ConcentrationColumn("CP", "linear"), pdt, frame)
    np.testing.assert_allclose(interp["ANC"], closed["ANC"], rtol=1e-3)
    assert closed["ANC"].min() < 0.5 * KLOFT["Circ0"]  # the drug really acts


def test_simulation_round_trip(tmp_path):
    """simulate() output passes check_dataset and reads back with identical values."""
    from pkpd.data.dataset import read_dataset
    from pkpd.data.validation import check_dataset

    df = design(doses=[(0.0, 180.0, 180.0)], times=np.arange(0.0, 21 * 24 + 1, 24.0), ids=(1, 2, 3))
    sim = simulate("kloft2006_docetaxel", df, seed=7)
    path = tmp_path / "sim.csv"
    sim.to_csv(path, index=False, na_rep=".")
    report = check_dataset(path)
    assert report.ok, report.render()
    back = read_dataset(path).df
    obs = sim["EVID"] == 0
    np.testing.assert_array_equal(back.loc[obs.to_numpy(), "DV"].to_numpy(), sim.loc[obs, "DV"].to_numpy())
    np.testing.assert_array_equal(back["TIME"].to_numpy(), sim["TIME"].to_numpy())
    again = simulate("kloft2006_docetaxel", df, seed=7)
    pd.testing.assert_frame_equal(sim, again)
    other = simulate("kloft2006_docetaxel", df, seed=8)
    assert not np.allclose(other.loc[obs, "DV"], sim.loc[obs, "DV"])
