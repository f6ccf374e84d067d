"""Multi-lineage marrow (Fornari 2019; pkpd/model/pd/marrow.py) and its carboplatin card.

Checks that can fail: the exact no-drug steady state of every state over 400 days; the
card's solve against the same equations written out by hand below (the re-implementation's
form, not the regrouped one of the component) and solved by SciPy at rtol 1e-10; the
shared-pool coupling (a drug acting only on the MPP pool lowers all three lineages, nadirs
ordered neutrophils, platelets, red cells); the Henrich 2017 stem-pool option (exact steady
state, cumulative depletion across cycles); and the card through the public API
(``load_model``, ``simulate``, a Laplace ``forecast`` of ANC, PLT and HGB).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.model.model import load_model
from pkpd.model.pd.marrow import FornariMarrow
from pkpd.model.registry import PD_SYSTEMS
from pkpd.model.pk.drivers import ClosedFormPK
from pkpd.model.system import Route, System
from pkpd.solve.solver import SolverOptions, predict_outputs, prepare_subjects, solve_batch_jit

CARD = Path(__file__).resolve().parents[1] / "models" / "fornari2019_carboplatin_marrow.toml"
MW = 371.25  # carboplatin g/mol (MODELS.md section 0)
TIGHT = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=200_000)


@pytest.fixture(scope="module")
def model():
    return load_model(CARD)


@pytest.fixture(scope="module")
def typical(model):
    return {k: float(v) for k, v in model.card.typical_values().items()}


def frame(doses, times, dvid=2):
    """NONMEM frame: dose tuples (time, mg, rate mg/h) into CMT 1 and observations at ``times``."""
    rows = [dict(ID=1, TIME=float(t), AMT=0.0, RATE=0.0, EVID=0, CMT=0, II=0.0, ADDL=0, SS=0, DV=np.nan,
                 DVID=dvid, _k=0) for t in times]
    rows += [dict(ID=1, TIME=float(t), AMT=a, RATE=r, EVID=1, CMT=1, II=0.0, ADDL=0, SS=0, DV=np.nan, DVID=0, _k=1)
             for t, a, r in doses]
    return pd.DataFrame(rows).sort_values(["TIME", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)


def package_outputs(system, df, theta, options=TIGHT):
    data = prepare_subjects(system, df)
    obs = df["EVID"].to_numpy() == 0
    t = jnp.asarray(df["TIME"].to_numpy()[obs][None, :])
    th = {k: jnp.asarray([float(v)]) for k, v in theta.items()}
    out, ok, _ = predict_outputs(system, data, th, t, jnp.full_like(t, jnp.inf), options)
    assert bool(ok[0])
    return {k: np.asarray(v[0]) for k, v in out.items()}


def package_states(system, df, theta, options=TIGHT):
    data = prepare_subjects(system, df)
    obs = df["EVID"].to_numpy() == 0
    ts = jnp.asarray(df["TIME"].to_numpy()[obs][None, :])
    th = {k: jnp.asarray([float(v)]) for k, v in theta.items()}
    states, ok, _ = solve_batch_jit(system, data, th, ts, options)
    assert bool(ok[0])
    y0 = system.flatten(system.initial_state({k: v[0] for k, v in th.items()}))
    return np.asarray(states[0]), np.asarray(y0)


# ---------------------------------------------------------------- the equations written out by hand
def reference_solve(p, doses, t_out, monocytes=True):
    """The 23-state model in the re-implementation's form (pkpd_model_FORNARI.R, derived rates of its Eq. S4
    script), carboplatin 2-cmt PK as amounts, SciPy DOP853 at rtol 1e-10; returns ANC, PLT, HGB at ``t_out``."""
    lam1, lam2, lam3, lam4, lam5 = (p[f"lambda{i}"] for i in range(1, 6))
    kcirc_ret = p["kcirc_RBC"] * p["RBC0"] / p["Ret0"]
    a_n, a_m, a_r, a_p = 3 / p["MTT_Neut"], 3 / p["MTT_Mono"], 3 / p["MTT_Ret"], 3 / p["MTT_Plt"]
    ktr_n = p["kcirc_Neut"] * p["Neut0"] / p["CMP0"]
    ktr_m = p["kcirc_Mono"] * p["Mono0"] / p["CMP0"] if monocytes else 0.0
    ktr_r = kcirc_ret * p["Ret0"] / (lam1 ** 2 * p["MEP0"])
    ktr_p = p["kcirc_Plt"] * p["Plt0"] / (lam2 ** 2 * p["MEP0"])
    kprol_r, kprol_p = a_r * (1 - 1 / lam1), a_p * (1 - 1 / lam2)
    kprol_cmp, kprol_mep = (ktr_n + ktr_m) / lam3, (ktr_r + ktr_p) / lam4
    ktr_cmp = (ktr_n + ktr_m - kprol_cmp) * p["CMP0"] / p["MPP0"]
    ktr_mep = (ktr_r + ktr_p - kprol_mep) * p["MEP0"] / p["MPP0"]
    kprol_mpp = (ktr_cmp + ktr_mep) / lam5
    k_stem = (ktr_cmp + ktr_mep - kprol_mpp) * p["MPP0"]

    def fb(r, g, hi):
        return min(max(r, 0.2), hi) ** g

    def rhs(t, y, rate):
        (a1, a2, dmg, mpp, cmp_, mep, n1, n2, n3, neut, m1, m2, m3, mono,
         r1, r2, r3, ret, rbc, p1, p2, p3, plt) = y
        c1 = a1 / p["V1"]
        da1 = rate - p["CL"] * c1 - p["Q2"] * (c1 - a2 / p["V2"])
        da2 = p["Q2"] * (c1 - a2 / p["V2"])
        c_um = max(c1, 0.0) * 1000.0 / MW
        ddmg = p["kdam"] * c_um - p["krep"] * dmg
        f_stem = fb(0.5 * p["CMP0"] / cmp_ + 0.5 * p["MEP0"] / mep, p["gamma_stem"], 50)
        r_c = 0.5 * p["Neut0"] / neut + 0.5 * p["Mono0"] / mono if monocytes else p["Neut0"] / neut
        f_mc = fb(r_c, p["gamma_mat_CMP"], 50)
        f_mm = fb(p["RBC0"] / rbc, p["gamma_mat_MEP"], 50)
        f_pr = fb(0.5 * p["Ret0"] / ret + 0.5 * p["RBC0"] / rbc, p["gamma_prolTrans"], 10)
        f_pp = fb(p["Plt0"] / plt, p["gamma_prolTrans"], 10)
        dmpp = (k_stem * f_stem + kprol_mpp * (1 - p["Slope_MPP"] * dmg) * mpp
                - ktr_cmp * f_mc * mpp - ktr_mep * f_mm * mpp)
        dcmp = kprol_cmp * (1 - p["Slope_CMP"] * dmg) * cmp_ + ktr_cmp * f_mc * mpp - (ktr_n + ktr_m) * cmp_
        dmep = kprol_mep * (1 - p["Slope_MEP"] * dmg) * mep + ktr_mep * f_mm * mpp - (ktr_r + ktr_p) * mep
        dn = [ktr_n * cmp_ - a_n * n1, a_n * (n1 - n2), a_n * (n2 - n3), a_n * n3 - p["kcirc_Neut"] * neut]
        if monocytes:
            dm = [ktr_m * cmp_ - a_m * m1, a_m * (m1 - m2), a_m * (m2 - m3), a_m * m3 - p["kcirc_Mono"] * mono]
        else:
            dm = [0.0, 0.0, 0.0, 0.0]
        kill_r = p["delta_Ret"] * p["Slope_MEP"] * kprol_r * dmg
        kill_p = p["delta_Plt"] * p["Slope_MEP"] * kprol_p * dmg
        dr = [kprol_r * f_pr * r1 - kill_r * r1 + ktr_r * mep - a_r * r1,
              kprol_r * f_pr * r2 - kill_r * r2 + a_r * r1 - a_r * r2,
              a_r * (r2 - r3), a_r * r3 - kcirc_ret * ret, kcirc_ret * ret - p["kcirc_RBC"] * rbc]
        dp = [kprol_p * f_pp * p1 - kill_p * p1 + ktr_p * mep - a_p * p1,
              kprol_p * f_pp * p2 - kill_p * p2 + a_p * p1 - a_p * p2,
              a_p * (p2 - p3), a_p * p3 - p["kcirc_Plt"] * plt]
        return [da1, da2, ddmg, dmpp, dcmp, dmep, *dn, *dm, *dr, *dp]

    tn = p["kcirc_Neut"] * p["Neut0"] / a_n
    tm = p["kcirc_Mono"] * p["Mono0"] / a_m
    tr2 = kcirc_ret * p["Ret0"] / a_r
    tp2 = p["kcirc_Plt"] * p["Plt0"] / a_p
    y = np.array([0, 0, 0, p["MPP0"], p["CMP0"], p["MEP0"], tn, tn, tn, p["Neut0"], tm, tm, tm, p["Mono0"],
                  tr2 / lam1, tr2, tr2, p["Ret0"], p["RBC0"], tp2 / lam2, tp2, tp2, p["Plt0"]], float)
    edges = {0.0, float(t_out[-1])}
    for t0, amt, rate in doses:
        edges |= {t0, t0 + amt / rate}
    edges = sorted(edges)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        rate = sum(r for t0, amt, r in doses if t0 <= a < t0 + amt / r)
        inside = t_out[(t_out >= a) & (t_out < b)]
        sol = solve_ivp(rhs, (a, b), y, args=(rate,), method="DOP853", rtol=1e-10, atol=1e-12,
                        t_eval=np.concatenate([inside, [b]]))
        assert sol.success
        out.append(sol.y[:, :-1])
        y = sol.y[:, -1]
    out.append(y[:, None])
    states = np.concatenate(out, axis=1)[:, : len(t_out)]
    return {"ANC": states[9], "PLT": states[22], "HGB": states[18] * p["MCH"] * 1e-4}


# ---------------------------------------------------------------- (a) steady state
def test_no_drug_every_state_and_output_holds_its_steady_state_over_400_days(model, typical):
    times = np.arange(0.0, 400 * 24 + 1e-9, 24.0)
    df = frame([], times)
    system = model.dynamics_for(df)
    states, y0 = package_states(system, df, typical, SolverOptions())
    rel = np.max(np.abs(states - y0) / np.where(y0 != 0, np.abs(y0), 1.0))
    print(f"\nno drug, 400 d, 21 marrow states: max relative drift {rel:.1e}")
    assert rel < 1e-9
    out = package_outputs(system, df, typical, SolverOptions())
    base = {"ANC": typical["Neut0"], "PLT": typical["Plt0"], "HGB": typical["RBC0"] * typical["MCH"] * 1e-4}
    assert base["HGB"] == pytest.approx(15.0)
    for name, b in base.items():
        assert np.max(np.abs(out[name] / b - 1)) < 1e-9, name


@pytest.mark.parametrize("monocytes,stem_cell", [(False, False), (True, True)])
def test_structural_options_hold_the_steady_state(typical, monocytes, stem_cell):
    comp = FornariMarrow(monocytes=monocytes, stem_cell=stem_cell)
    theta = {k: typical[k] for k in (*comp.parameter_names, "CL", "V1", "Q2", "V2") if k in typical}
    if stem_cell:
        theta.update(kHSC=0.002, gamma_HSC=0.3)
    system = marrow_system(comp)
    times = np.arange(0.0, 400 * 24 + 1e-9, 48.0)
    states, y0 = package_states(system, frame([], times), theta, SolverOptions())
    assert len(y0) == (21 if monocytes else 17) + (1 if stem_cell else 0)
    rel = np.max(np.abs(states - y0) / np.where(y0 != 0, np.abs(y0), 1.0))
    assert rel < 1e-9


def marrow_system(comp):
    return System(
        components=(ClosedFormPK("2cmt", name="carboplatin"), comp),
        links=((comp.name, "drug", "carboplatin", "conc"),),
        link_scale=[1000.0 / MW],
        outputs=(("ANC", comp.name, "ANC"), ("PLT", comp.name, "PLT"), ("HGB", comp.name, "HGB")),
        output_scale=[1.0, 1.0, 1.0],
        routes=(Route(1, "carboplatin", "central"),),
        route_scale=[1.0],
    )


# ---------------------------------------------------------------- (b) against the hand-written solve
def test_card_against_hand_written_scipy_solve(model, typical):
    """Carboplatin 600 mg as 1-h infusions q3w x2, 42 days, every 6 h: package (rtol 1e-10) vs SciPy DOP853."""
    doses = [(0.0, 600.0, 600.0), (504.0, 600.0, 600.0)]
    times = np.arange(0.0, 42 * 24 + 1e-9, 6.0)
    df = frame(doses, times)
    got = package_outputs(model.dynamics_for(df), df, typical)
    ref = reference_solve(typical, doses, times)
    errs = {k: float(np.max(np.abs(got[k] / ref[k] - 1))) for k in ("ANC", "PLT", "HGB")}
    print(f"\nmax relative error vs SciPy DOP853 (rtol 1e-10), 2 cycles: {errs}")
    first = times < 504
    nadir = {k: (round(float(ref[k][first].min()), 3), float(times[np.argmin(ref[k][first])] / 24)) for k in ref}
    print(f"cycle-1 reference nadirs (value, day): {nadir}")
    for k, e in errs.items():
        assert e < 1e-7, (k, e)
    # a real toxicity (not a flat line): neutrophils and platelets drop by >= 30%
    assert ref["ANC"].min() < 0.7 * typical["Neut0"] and ref["PLT"].min() < 0.7 * typical["Plt0"]


# ---------------------------------------------------------------- (c) the shared pool couples the lineages
def test_drug_on_the_mpp_pool_alone_lowers_all_lineages_in_delay_order(model, typical):
    theta = {**typical, "Slope_CMP": 0.0, "Slope_MEP": 0.0, "delta_Ret": 0.0, "delta_Plt": 0.0}
    times = np.arange(0.0, 150 * 24 + 1e-9, 6.0)
    df = frame([(0.0, 900.0, 900.0)], times)
    out = package_outputs(model.dynamics_for(df), df, theta)
    base = {"ANC": typical["Neut0"], "PLT": typical["Plt0"], "HGB": typical["RBC0"] * typical["MCH"] * 1e-4}
    drop = {k: float(1 - out[k].min() / base[k]) for k in base}
    day = {k: float(times[np.argmin(out[k])] / 24) for k in base}
    print(f"\nMPP-only drug (900 mg): relative drop {drop}, nadir day {day}")
    for k in base:
        assert drop[k] > 0.002, k  # every lineage is lowered through the shared pool
        i = int(np.argmin(out[k]))
        assert np.all(out[k][: i + 1] <= base[k] * (1 + 1e-9)), k  # a fall to the nadir, no early overshoot
    assert day["ANC"] < day["PLT"] < day["HGB"]
    # without the MPP hit nothing moves: the coupling is the pool, not a hidden path
    none = package_outputs(model.dynamics_for(df), df, {**theta, "Slope_MPP": 0.0})
    for k in base:
        assert np.max(np.abs(none[k] / base[k] - 1)) < 1e-9


def test_stem_pool_depletes_across_cycles(typical):
    """Henrich 2017 option: a slow stem pool hit by each cycle lowers the later cycles' nadirs further."""
    doses = [(504.0 * c, 600.0, 600.0) for c in range(4)]
    times = np.arange(0.0, 4 * 504 + 1e-9, 6.0)
    nadirs = {}
    for stem in (False, True):
        comp = FornariMarrow(stem_cell=stem)
        theta = {k: typical[k] for k in (*comp.parameter_names, "CL", "V1", "Q2", "V2") if k in typical}
        if stem:
            theta.update(kHSC=0.002, gamma_HSC=0.3)
        out = package_outputs(marrow_system(comp), frame(doses, times), theta, SolverOptions(rtol=1e-8, atol=1e-10))
        anc = out["ANC"]
        nadirs[stem] = [float(anc[(times >= 504 * c) & (times < 504 * (c + 1))].min()) for c in range(4)]
    print(f"\nANC nadir per cycle without / with the stem pool: {nadirs[False]} / {nadirs[True]}")
    assert nadirs[True][3] < nadirs[True][0]
    assert nadirs[True][3] / nadirs[True][0] < nadirs[False][3] / nadirs[False][0] - 0.02


# ---------------------------------------------------------------- (d) public API
def test_card_loads_and_simulates_a_regimen():
    m = pkpd.load_model(CARD)
    assert m.outputs == ("ANC", "PLT", "HGB") and m.card.drugs == ("carboplatin",)
    assert PD_SYSTEMS["fornari_marrow"] is FornariMarrow
    sim = pkpd.simulate(m, "carboplatin 600 mg 1h q3w x3", 1, iiv=False, residual=False,
                        times=np.arange(0.0, 63 * 24 + 1e-9, 12.0))
    obs = sim[sim["EVID"] == 0]
    assert np.isfinite(obs["DV"]).all()
    nadir = {}
    for dvid, name in ((2, "ANC"), (3, "PLT"), (4, "HGB")):
        s = obs[obs["DVID"] == dvid]
        nadir[name] = [round(float(s[(s["TIME"] >= 504 * c) & (s["TIME"] < 504 * (c + 1))]["DV"].min()), 2)
                       for c in range(3)]
    print(f"\ncarboplatin 600 mg 1h q3w x3, typical patient, nadir per cycle: {nadir}")
    # carboplatin AUC-5-like exposure: moderate neutropenia and thrombocytopenia, Hb falling cycle on cycle
    # (values of this card, measured; the equations themselves are checked against SciPy above)
    np.testing.assert_allclose([nadir["ANC"][0], nadir["PLT"][0]], [2.44, 146.5], rtol=0.01)
    assert nadir["HGB"][2] < nadir["HGB"][1] < nadir["HGB"][0] < 15.0


@pytest.mark.slow  # about 60 s: compiling the Laplace posterior of the 21-state marrow model; warm < 1 s
def test_laplace_forecast_of_three_lineages_on_a_simulated_patient():
    m = pkpd.load_model(CARD)
    # a small simulated patient: first cycle observed on days 0-14, forecast the next 21 days
    patient = pkpd.simulate(m, "carboplatin 600 mg 1h", 1, seed=3, times=np.array([0.0, 72, 168, 240, 336]))
    regimen = "carboplatin 600 mg 1h @504h"
    kw = dict(horizon="21d", method="laplace", lineage=["ANC", "PLT", "HGB"], draws=100, seed=0)
    t0 = time.perf_counter()
    pkpd.forecast(m, patient, regimen, **kw)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    fc = pkpd.forecast(m, patient, regimen, **kw)
    warm = time.perf_counter() - t0
    print(f"\nLaplace forecast ANC/PLT/HGB: cold {cold:.1f} s, warm {warm:.1f} s")
    assert fc.lineage == "ANC" and set(fc.lineages) == {"ANC", "PLT", "HGB"}
    for lin in ("ANC", "PLT", "HGB"):
        traj = np.asarray(fc.lineage_trajectories[lin])
        assert np.isfinite(traj[~np.isnan(traj)]).all() and np.nanmin(traj) > 0, lin
    assert warm < 10.0
