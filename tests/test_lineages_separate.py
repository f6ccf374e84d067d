"""The separate-lineage carboplatin card (three lineage models sharing only the drug) and the
``rename`` of a [[pd]] component's parameters (pkpd/model/renamed.py) that lets two components
of one family sit in one model.

Checks that can fail: the card against the same equations written out here by hand (carboplatin
2-cmt infusion, Friberg neutrophils, Friberg platelets with random destruction, red-cell lifespan
chain with a self-renewing progenitor pool) and solved by SciPy at rtol 1e-10; the exact no-drug
steady state over 400 days; renamed parameters act on their own lineage only; malformed renames
are errors that name the field.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.errors import ModelError
from pkpd.model.model import load_model
from pkpd.solve.solver import SolverOptions, predict_outputs, prepare_subjects

CARD = Path(__file__).resolve().parents[1] / "models" / "carboplatin_lineages_separate.toml"
MW = 371.25
TIGHT = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=200_000)
NAME = {2: "ANC", 3: "PLT", 4: "HGB"}


@pytest.fixture(scope="module")
def model():
    return load_model(CARD)


@pytest.fixture(scope="module")
def typical(model):
    return {k: float(v) for k, v in model.card.typical_values().items()}


def frame(doses, times):
    """Dose tuples (time h, mg, rate mg/h) into CMT 1; ANC, PLT and HGB at ``times``."""
    rows = [dict(ID=1, TIME=float(t), AMT=0.0, RATE=0.0, EVID=0, CMT=0, II=0.0, ADDL=0, SS=0, DV=np.nan,
                 DVID=dvid, _k=0) for t in times for dvid in (2, 3, 4)]
    rows += [dict(ID=1, TIME=float(t), AMT=a, RATE=r, EVID=1, CMT=1, II=0.0, ADDL=0, SS=0, DV=np.nan, DVID=0, _k=1)
             for t, a, r in doses]
    return pd.DataFrame(rows).sort_values(["TIME", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)


def package(model, df, theta, options=TIGHT):
    """``{output: [n_times]}`` of the package's solve."""
    data = prepare_subjects(model.dynamics, df)
    obs = df["EVID"].to_numpy() == 0
    t = jnp.asarray(df["TIME"].to_numpy()[obs][None, :])
    th = {k: jnp.asarray([float(v)]) for k, v in theta.items()}
    out, ok, _ = predict_outputs(model.dynamics, data, th, t, jnp.full_like(t, jnp.inf), options)
    assert bool(ok[0])
    dvid = df["DVID"].to_numpy()[obs]
    values = np.array([float(out[NAME[d]][0, i]) for i, d in enumerate(dvid)])
    times = df["TIME"].to_numpy()[obs]
    return {NAME[d]: values[dvid == d] for d in (2, 3, 4)}, {NAME[d]: times[dvid == d] for d in (2, 3, 4)}


def reference(theta, doses, times):
    """The card's equations written out and solved by SciPy (rtol 1e-10)."""
    p = theta
    k10, k12, k21 = p["CL"] / p["V1"], p["Q2"] / p["V1"], p["Q2"] / p["V2"]
    ktr_n = 4.0 / p["MTT"]
    kpt, kls, n_ls = 1.0 / p["RBCPT"], 4.0 / p["RBCLS"], 4

    def rate_in(t):
        return sum(r for t0, a, r in doses if t0 <= t < t0 + a / r)

    def rhs(t, y):
        a1, a2 = y[0], y[1]
        c = a1 / p["V1"] / MW * 1000.0  # umol/L
        d = np.empty_like(y)
        d[0] = rate_in(t) - (k10 + k12) * a1 + k21 * a2
        d[1] = k12 * a1 - k21 * a2
        # neutrophils (Friberg 2002): Prol, T1..T3, Circ
        pr, t1, t2, t3, circ = y[2:7]
        d[2] = ktr_n * pr * ((1 - p["slope"] * c) * (p["Circ0"] / circ) ** p["gamma"] - 1)
        d[3], d[4], d[5] = ktr_n * (pr - t1), ktr_n * (t1 - t2), ktr_n * (t2 - t3)
        d[6] = ktr_n * (t3 - circ)
        # platelets (Perez-Ruixo 2016 form, linear effect): Prol, T1..T3, Circ with random destruction ks
        pr, t1, t2, t3, plt = y[7:12]
        kt = p["ktr"]
        d[7] = kt * pr * ((1 - p["slope_PLT"] * c) * (p["PLT0"] / plt) ** p["gamma_PLT"] - 1)
        d[8], d[9], d[10] = kt * (pr - t1), kt * (t1 - t2), kt * (t2 - t3)
        d[11] = kt * t3 - p["ks"] * plt
        # red cells (Agoram 2006 lifespan chain, progenitor pool with Hb feedback), relative to baseline
        pool, pt = y[12], y[13]
        ls = y[14:14 + n_ls]
        hb = p["Hb0"] * ls.mean()
        d[12] = kpt * pool * ((1 - p["slope_HGB"] * c) * (p["Hb0"] / hb) ** p["gamma_HGB"] - 1)
        d[13] = kpt * (pool - pt)
        up = np.concatenate([[pt], ls[:-1]])
        d[14:14 + n_ls] = kls * (up - ls)
        return d

    prol_p = p["PLT0"] * p["ks"] / p["ktr"]
    y0 = np.concatenate([[0.0, 0.0], np.full(5, p["Circ0"]), [prol_p] * 4 + [p["PLT0"]], np.ones(2 + n_ls)])
    edges = sorted({0.0, *[t0 for t0, _, _ in doses], *[t0 + a / r for t0, a, r in doses], float(times[-1])})
    ts, ys = [], []
    y = y0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = times[(times >= lo) & (times < hi)] if hi < times[-1] else times[(times >= lo) & (times <= hi)]
        sol = solve_ivp(rhs, (lo, hi), y, method="LSODA", rtol=1e-10, atol=1e-12, t_eval=inside,
                        first_step=1e-6)
        ts.append(sol.t)
        ys.append(sol.y)
        y = solve_ivp(rhs, (lo, hi), y, method="LSODA", rtol=1e-10, atol=1e-12, first_step=1e-6).y[:, -1]
    y = np.concatenate(ys, axis=1)
    return {"ANC": y[6], "PLT": y[11], "HGB": p["Hb0"] * y[14:14 + n_ls].mean(axis=0)}


def test_card_matches_the_equations_written_out(model, typical):
    doses = [(0.0, 800.0, 800.0), (504.0, 800.0, 800.0)]
    times = np.arange(0.0, 42 * 24 + 1, 24.0)
    got, _ = package(model, frame(doses, times), typical)
    want = reference(typical, doses, times)
    for lin in ("ANC", "PLT", "HGB"):
        err = np.max(np.abs(got[lin] / want[lin] - 1))
        assert err < 1e-7, (lin, err)
    # the chemotherapy really acts on each lineage (the comparison is not between two flat lines)
    assert want["ANC"].min() < 0.6 * typical["Circ0"]
    assert want["PLT"].min() < 0.5 * typical["PLT0"]
    assert want["HGB"].min() < 0.92 * typical["Hb0"]


def test_no_drug_steady_state_is_exact(model, typical):
    times = np.linspace(0.0, 400 * 24.0, 41)
    got, _ = package(model, frame([], times), typical)
    for lin, base in (("ANC", "Circ0"), ("PLT", "PLT0"), ("HGB", "Hb0")):
        assert np.max(np.abs(got[lin] / typical[base] - 1)) < 1e-12, lin


def test_renamed_parameters_act_on_their_own_lineage_only(model, typical):
    """gamma / slope (neutrophils), gamma_PLT / slope_PLT and gamma_HGB / slope_HGB are six distinct
    parameters: changing the platelets' slope moves PLT only, the neutrophils' moves ANC only."""
    assert {"gamma", "slope", "gamma_PLT", "slope_PLT", "gamma_HGB", "slope_HGB"} <= set(model.parameter_names)
    df = frame([(0.0, 800.0, 800.0)], np.arange(0.0, 28 * 24 + 1, 48.0))
    base, _ = package(model, df, typical)
    for name, moved in (("slope_PLT", "PLT"), ("slope", "ANC"), ("slope_HGB", "HGB")):
        got, _ = package(model, df, {**typical, name: typical[name] * 1.5})
        for lin in ("ANC", "PLT", "HGB"):
            change = np.max(np.abs(got[lin] / base[lin] - 1))
            # the other lineages move only by the shared adaptive step (solver tolerance 1e-10)
            assert (change > 1e-3) if lin == moved else (change < 1e-8), (name, lin, change)


def test_separate_card_describes_the_fornari_typical_patient(typical):
    """Its typical values were fitted to the shared-pool card's typical patient (card notes): the
    cycle-1 nadirs agree (measured: ANC 2.219 vs 2.213, HGB 13.84 vs 13.90; PLT 111.5 vs 131.3: the
    least-squares fit over two cycles trades the first platelet nadir against the deeper second one
    of the shared pool, which a separate chain cannot produce)."""
    fornari = load_model("fornari2019_carboplatin_marrow")
    separate = load_model(CARD)
    times = np.arange(0.0, 21 * 24 + 1, 12.0)
    out = {}
    for label, m in (("F", fornari), ("S", separate)):
        sim = pkpd.simulate(m, "carboplatin 800 mg 1h", 1, iiv=False, residual=False, times=times)
        obs = sim[sim["EVID"] == 0]
        out[label] = {NAME[d]: obs.loc[obs["DVID"] == d, "IPRED"].min() for d in (2, 3, 4)}
    for lin, rel in (("ANC", 0.02), ("PLT", 0.2), ("HGB", 0.02)):
        assert out["S"][lin] == pytest.approx(out["F"][lin], rel=rel), (lin, out)


def _card_text():
    return CARD.read_text().replace('name = "carboplatin_lineages_separate"', 'name = "rename_test"')


@pytest.mark.parametrize("old, new, field, match", [
    ('rename = { gamma = "gamma_PLT", slope = "slope_PLT" }', 'rename = { gamma = "gamma_PLT", nope = "x" }',
     "pd[1].rename", "nope"),
    ('rename = { gamma = "gamma_PLT", slope = "slope_PLT" }', 'rename = { gamma = "ktr", slope = "slope_PLT" }',
     "pd[1].rename", "alike"),
    ('rename = { gamma = "gamma_PLT", slope = "slope_PLT" }', 'rename = { gamma = "gamma PLT", slope = "slope_PLT" }',
     "pd[1].rename.gamma", "parameter name"),
])
def test_bad_rename_is_an_error_naming_the_field(tmp_path, old, new, field, match):
    text = _card_text()
    assert old in text
    path = tmp_path / "rename_test.toml"
    path.write_text(text.replace(old, new))
    with pytest.raises(ModelError, match=r"(?s)" + field.replace("[", r"\[").replace("]", r"\]") + ".*" + match):
        pkpd.load_card(path)


def test_without_rename_the_shared_names_clash(tmp_path):
    text = _card_text().replace('rename = { gamma = "gamma_PLT", slope = "slope_PLT" }\n', "")
    path = tmp_path / "rename_test.toml"
    path.write_text(text)
    with pytest.raises(ModelError, match="gamma_PLT|slope_PLT|gamma|slope"):
        pkpd.load_card(path)
