"""Closed-form linear PK (``pkpd.pk``, ``pkpd.events``, ``pkpd.predict``).

1. The closed form against an independent piecewise numerical ODE solution (diffrax)
   of the full linear compartment system, for 1/2/3 compartments x IV bolus /
   zero-order infusion / first-order absorption, single and repeated (ADDL) doses.
2. NONMEM dosing semantics: ADDL, SS=1 / SS=2, ALAG, F, EVID 3 / 4, modelled rate and
   duration, record order at equal times.
3. Gradients with respect to the parameters against central finite differences.

Data are NONMEM-style pandas frames built here; predictions go through the low-level
``prepare_pk`` / ``evaluation_keys`` / ``pk_predictor`` path (see :func:`predict`).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pkpd.dosing.events import evaluation_keys
from pkpd.model.pk.predict import pk_predictor, prepare_pk

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

COLUMNS = ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS"]


def dose(id, time, amt, cmt, *, rate=0.0, ii=0.0, addl=0, ss=0, evid=1, **extra):
    """One dose (or EVID 3 reset) record."""
    return dict(ID=id, TIME=float(time), DV=np.nan, AMT=float(amt), EVID=evid, MDV=1, CMT=cmt,
                RATE=float(rate), II=float(ii), ADDL=int(addl), SS=int(ss), **extra)


def reset(id, time, cmt=1):
    return dose(id, time, 0.0, cmt, evid=3)


def obs(id, times, cmt=1):
    """Observation records at ``times``."""
    return [dict(ID=id, TIME=float(t), DV=0.0, AMT=0.0, EVID=0, MDV=0, CMT=cmt, RATE=0.0, II=0.0,
                 ADDL=0, SS=0) for t in np.atleast_1d(times)]


def frame(*records, sort=True) -> pd.DataFrame:
    """NONMEM frame from records (dicts or lists of dicts).

    With ``sort`` the rows are stably sorted by (subject in order of appearance, TIME), so a
    record listed earlier comes first at equal times (doses listed before observations
    are seen by them). Without ``sort`` the given order is kept.
    """
    flat = []
    for r in records:
        flat.extend(r if isinstance(r, list) else [r])
    df = pd.DataFrame(flat)
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    if sort:
        key = pd.factorize(df["ID"])[0]
        df = df.assign(_k=key).sort_values(["_k", "TIME"], kind="stable").drop(columns="_k")
    return df.reset_index(drop=True)


def predict(df: pd.DataFrame, model: str, params: dict) -> np.ndarray:
    """Predicted concentrations at the EVID == 0 rows of ``df``, in row order."""
    df = df.reset_index(drop=True)
    static, inputs, values = prepare_pk(df, model, params)
    ids = list(pd.unique(df["ID"]))
    rows = np.flatnonzero(df["EVID"].to_numpy(int) == 0)
    t, o, row, mask = evaluation_keys(df, rows, ids, n_subjects=inputs["events"].time.shape[0])
    conc = np.asarray(pk_predictor(static, inputs, values, jnp.asarray(t), jnp.asarray(o)))
    out = pd.Series(conc[mask], index=row[mask]).reindex(rows).to_numpy(float)
    assert np.all(np.isfinite(out)), "prediction is not finite"
    return out


def obs_mask(df: pd.DataFrame, id=None) -> np.ndarray:
    """Boolean mask over the observation rows (of subject ``id``)."""
    o = df[df["EVID"] == 0]
    return np.ones(len(o), bool) if id is None else (o["ID"] == id).to_numpy()


def obs_times(df: pd.DataFrame) -> np.ndarray:
    return df.loc[df["EVID"] == 0, "TIME"].to_numpy(float)


def assert_close_to_peak(got, want, rel, what=""):
    """max |got - want| <= rel * max |want| (a profile-relative tolerance)."""
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    assert scale > 0, f"{what}: reference profile is identically zero"
    err = np.max(np.abs(got - want))
    i = int(np.argmax(np.abs(got - want)))
    assert err <= rel * scale, (
        f"{what}: max |diff| = {err:.3e} > {rel:g} x peak {scale:.4g} at index {i} "
        f"(got {got[i]!r}, want {want[i]!r})"
    )


# Parameter sets (user names as in the model conventions).
DISPOSITION = {
    "1cmt": {"CL": 2.0, "V": 15.0},
    "2cmt": {"CL": 3.0, "V1": 10.0, "Q": 5.0, "V2": 30.0},
    "3cmt": {"CL": 3.0, "V1": 10.0, "Q2": 5.0, "V2": 30.0, "Q3": 1.2, "V3": 80.0},
}
KA = 1.3

# ---------------------------------------------------------------------------------------
# 1. closed form vs numerical ODE solution
# ---------------------------------------------------------------------------------------

N_STATE = 4  # depot + central + 2 peripherals at most; unused states stay zero


@jax.jit
def _ode_segment(kmat, rate, y0, t0, t1):
    """State at ``t1`` of dy/dt = K y + rate from ``y0`` at ``t0`` (rate constant on the segment)."""
    term = diffrax.ODETerm(lambda t, y, args: args[0] @ y + args[1])
    sol = diffrax.diffeqsolve(
        term, diffrax.Tsit5(), t0, t1, None, y0, args=(kmat, rate),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12), max_steps=100_000,
    )
    return sol.ys[-1]


def _rate_matrix(model: str, p: dict, absorption: bool) -> tuple[np.ndarray, int, float]:
    """Linear system in amounts: (K [4, 4], index of the central state, V1)."""
    n = int(model[0])
    cl = p["CL"]
    v1 = p.get("V", p.get("V1"))
    qs = [p.get("Q", p.get("Q2"))] if n >= 2 else []
    vs = [p["V2"]] if n >= 2 else []
    if n == 3:
        qs.append(p["Q3"])
        vs.append(p["V3"])
    k = np.zeros((N_STATE, N_STATE))
    c = 1 if absorption else 0
    if absorption:
        k[0, 0] = -p["KA"]
        k[c, 0] = p["KA"]
    k[c, c] = -(cl + sum(qs)) / v1
    for j, (q, v) in enumerate(zip(qs, vs)):
        pj = c + 1 + j
        k[c, pj] = q / v
        k[pj, c] = q / v1
        k[pj, pj] = -q / v
    return k, c, v1


def ode_reference(model, p, absorption, doses, times):
    """Central concentration at ``times`` from a piecewise diffrax integration.

    ``doses``: (time, cmt, amt, rate) with rate 0 for a bolus (state index = CMT - 1 in
    both compartment conventions). Observations at a dose time see the dose.
    """
    kmat, c, v1 = _rate_matrix(model, p, absorption)
    kmat = jnp.asarray(kmat)
    bolus, rate_change = {}, {}
    for t, cmt, amt, rate in doses:
        if rate > 0:
            rate_change.setdefault(t, []).append((cmt - 1, rate))
            rate_change.setdefault(t + amt / rate, []).append((cmt - 1, -rate))
        else:
            bolus.setdefault(t, []).append((cmt - 1, amt))
    times = np.asarray(times, float)
    points = sorted(set(bolus) | set(rate_change) | set(times.tolist()))
    y = np.zeros(N_STATE)
    r = np.zeros(N_STATE)
    assert points[0] >= 0
    now = 0.0
    at = {}
    for tp in points:
        if tp > now:
            y = np.array(_ode_segment(kmat, jnp.asarray(r), jnp.asarray(y), now, tp))
            now = tp
        for idx, amt in bolus.get(tp, []):
            y[idx] += amt
        for idx, dr in rate_change.get(tp, []):
            r[idx] += dr
        at[tp] = y[c] / v1
    return np.array([at[t] for t in times])


def _expand(d):
    """(time, cmt, amt, rate, ii, addl) -> explicit doses (time, cmt, amt, rate)."""
    t, cmt, amt, rate, ii, addl = d
    return [(t + j * ii, cmt, amt, rate) for j in range(addl + 1)]


# Observation grid: hourly, plus some off-grid times (a 1.5 h infusion ends between samples).
TIMES = np.unique(np.concatenate([np.arange(0.0, 49.0), [0.1, 0.5, 1.25, 2.7, 13.6, 30.3]]))


def _scenarios(n: int, absorption: bool):
    """Per subject: list of (time, cmt, amt, rate, ii, addl)."""
    if absorption:  # CMT 1 depot, 2 central, 3/4 peripheral
        s = {
            1: [(0.0, 1, 100.0, 0.0, 0, 0)],  # oral, single
            2: [(0.0, 1, 100.0, 0.0, 8.0, 4)],  # oral, repeated
            3: [(0.0, 2, 50.0, 0.0, 12.0, 2)],  # IV bolus into central, repeated
            4: [(0.5, 2, 60.0, 40.0, 0, 0)],  # 1.5 h infusion into central, single
            5: [(0.0, 2, 80.0, 20.0, 6.0, 5)],  # 4 h infusions q6, repeated
            6: [(0.0, 1, 50.0, 20.0, 12.0, 2), (3.0, 2, 10.0, 0.0, 0, 0)],  # depot infusion + IV
        }
        if n >= 2:
            s[7] = [(0.0, 3, 70.0, 0.0, 0, 0), (5.0, 1, 30.0, 0.0, 0, 0)]  # dose into peripheral
    else:  # CMT 1 central, 2/3 peripheral
        s = {
            1: [(0.0, 1, 100.0, 0.0, 0, 0)],  # bolus, single
            2: [(0.0, 1, 100.0, 0.0, 12.0, 3)],  # bolus, repeated
            3: [(0.0, 1, 90.0, 60.0, 0, 0)],  # 1.5 h infusion, single
            4: [(0.0, 1, 90.0, 60.0, 4.0, 6)],  # 1.5 h infusions q4, repeated
            5: [(1.0, 1, 100.0, 25.0, 8.0, 4)],  # 4 h infusions q8
        }
        if n >= 2:
            s[6] = [(0.0, n, 70.0, 0.0, 0, 0), (10.0, 1, 30.0, 0.0, 0, 0)]  # last peripheral
            s[7] = [(2.0, 2, 50.0, 10.0, 0, 0)]  # infusion into a peripheral
    return s


@pytest.mark.parametrize("absorption", [False, True], ids=["iv", "ka"])
@pytest.mark.parametrize("model", ["1cmt", "2cmt", "3cmt"])
def test_closed_form_matches_ode(model, absorption):
    params = dict(DISPOSITION[model], **({"KA": KA} if absorption else {}))
    scen = _scenarios(int(model[0]), absorption)
    records = []
    for sid, ds in scen.items():
        for t, cmt, amt, rate, ii, addl in ds:
            records.append(dose(sid, t, amt, cmt, rate=rate, ii=ii, addl=addl))
        records.extend(obs(sid, TIMES, cmt=2 if absorption else 1))
    df = frame(*records)
    got = predict(df, model, params)
    for sid, ds in scen.items():
        ref = ode_reference(model, params, absorption, [e for d in ds for e in _expand(d)], TIMES)
        assert_close_to_peak(got[obs_mask(df, sid)], ref, 1e-6, f"{model} {'KA' if absorption else 'IV'} subject {sid} {ds}")


# ---------------------------------------------------------------------------------------
# 2. NONMEM semantics (2-compartment model with a depot: CMT 1 depot, 2 central)
# ---------------------------------------------------------------------------------------

M2 = "2cmt"
P2 = {"CL": 4.0, "V1": 12.0, "Q": 6.0, "V2": 25.0, "KA": 1.6}
TIGHT = 1e-10  # closed form vs closed form: only rounding differences expected


def test_addl_equals_explicit_dose_rows():
    # (cmt, amt, rate, ii, addl, lag); F1 and the ALAG2 column check that implied doses get them.
    cases = {1: (1, 100.0, 0.0, 12.0, 4, 0.0), 2: (2, 50.0, 0.0, 8.0, 5, 0.0), 3: (2, 50.0, 0.0, 8.0, 5, 1.5),
             4: (2, 60.0, 20.0, 6.0, 7, 1.5), 5: (1, 80.0, 40.0, 24.0, 2, 0.0)}
    times = np.arange(0.0, 60.0, 0.5)  # includes the implied dose times
    rec_addl, rec_rows = [], []
    for sid, (cmt, amt, rate, ii, addl, lag) in cases.items():
        rec_addl.append(dose(sid, 0.0, amt, cmt, rate=rate, ii=ii, addl=addl, LAG=lag))
        rec_addl.extend(obs(sid, times, 2))
        rec_rows.extend(dose(sid, j * ii, amt, cmt, rate=rate, LAG=lag) for j in range(addl + 1))
        rec_rows.extend(obs(sid, times, 2))
    params = dict(P2, F1=0.7, ALAG2="LAG")
    a = predict(frame(*rec_addl), M2, params)
    b = predict(frame(*rec_rows), M2, params)
    assert np.max(np.abs(b)) > 0
    assert_close_to_peak(a, b, TIGHT, "ADDL vs explicit rows")


# Steady-state cases: (cmt, amt, rate, ii, lag). The lag is a per-record ALAG2 column.
SS_CASES = {
    1: (2, 100.0, 0.0, 12.0, 0.0),  # IV bolus
    2: (2, 100.0, 50.0, 12.0, 0.0),  # 2 h infusion
    3: (2, 100.0, 5.0, 8.0, 0.0),  # 20 h infusion, longer than II = 8
    4: (1, 100.0, 0.0, 12.0, 0.0),  # oral
    5: (2, 100.0, 0.0, 12.0, 3.0),  # bolus with lag < II
    6: (2, 100.0, 20.0, 6.0, 4.0),  # 5 h infusion with lag: lag + duration > II
    7: (2, 100.0, 0.0, 12.0, 20.0),  # bolus with lag > II (infinite-train interpretation)
    8: (1, 100.0, 0.0, 12.0, 0.0),  # oral, with earlier history that SS=1 discards
}
N_LONG = 60


def _ss_frames():
    """(SS=1 frame, long-repeated-dosing frame); the SS record is at (N_LONG - 1) * II."""
    ss_rec, long_rec = [], []
    for sid, (cmt, amt, rate, ii, lag) in SS_CASES.items():
        t_ss = (N_LONG - 1) * ii
        times = t_ss + ii * np.arange(0.0, 3.0, 1.0 / 8.0)
        if sid == 8:
            ss_rec.append(dose(sid, 10.0, 500.0, 2, LAG=0.0))
        ss_rec.append(dose(sid, t_ss, amt, cmt, rate=rate, ii=ii, addl=2, ss=1, LAG=lag))
        ss_rec.extend(obs(sid, times, 2))
        long_rec.append(dose(sid, 0.0, amt, cmt, rate=rate, ii=ii, addl=N_LONG + 1, LAG=lag))
        long_rec.extend(obs(sid, times, 2))
    return frame(*ss_rec), frame(*long_rec)


def test_ss1_equals_long_repeated_dosing():
    ss_df, long_df = _ss_frames()
    params = dict(P2, ALAG2="LAG", ALAG1="LAG")
    ss = predict(ss_df, M2, params)
    long = predict(long_df, M2, params)
    for sid, case in SS_CASES.items():
        m = obs_mask(ss_df, sid)
        assert_close_to_peak(ss[m], long[m], 1e-9, f"SS=1 vs {N_LONG} doses, subject {sid} {case}")


def test_ss1_constant_infusion_record():
    """SS=1, AMT=0, RATE>0: steady state of a constant infusion, stopped at the record."""
    t0 = 5.0
    times = np.array([5.0, 6.0, 9.5, 20.0])
    df = frame(dose(1, t0, 0.0, 2, rate=10.0, ss=1), obs(1, times, 2))
    got = predict(df, M2, P2)
    # Reference: a very long infusion (rate 10 from time 0 for 600 h) stopped at 600 h.
    long = frame(dose(1, 0.0, 6000.0, 2, rate=10.0), obs(1, 600.0 + times - t0, 2))
    want = predict(long, M2, P2)
    np.testing.assert_allclose(got[0], 10.0 / P2["CL"], rtol=1e-9)  # C_ss = R / CL
    assert_close_to_peak(got, want, 1e-9, "SS constant infusion")


def test_lag_shifts_profile():
    lag1, lag2 = 1.75, 2.5  # exactly representable, so arrival times are exact
    cases = {1: (1, 100.0, 0.0, 12.0, 3), 2: (2, 60.0, 20.0, 8.0, 4), 3: (2, 40.0, 0.0, 6.0, 5)}
    grid = np.arange(0.0, 48.0, 0.25)
    lagged, shifted = [], []
    for sid, (cmt, amt, rate, ii, addl) in cases.items():
        lag = lag1 if cmt == 1 else lag2
        lagged.append(dose(sid, 0.0, amt, cmt, rate=rate, ii=ii, addl=addl))
        lagged.extend(obs(sid, grid + lag, 2))
        shifted.append(dose(sid, 0.0, amt, cmt, rate=rate, ii=ii, addl=addl))
        shifted.extend(obs(sid, grid, 2))
    a = predict(frame(*lagged), M2, dict(P2, ALAG1=lag1, ALAG2=lag2))
    b = predict(frame(*shifted), M2, P2)
    assert_close_to_peak(a, b, TIGHT, "pred(t; lag) vs pred(t - lag; 0)")
    # Before the first arrival nothing is there yet.
    early = predict(frame(*[dose(1, 0.0, 100.0, 2), obs(1, [0.0, 1.0, 2.49], 2)]), M2, dict(P2, ALAG2=2.5))
    np.testing.assert_array_equal(early, 0.0)


def test_bioavailability():
    times = np.arange(0.0, 40.0, 0.5)
    f1, f2 = 0.6, 0.35
    linear = frame(
        dose(1, 0.0, 100.0, 1, ii=12.0, addl=2), obs(1, times, 2),  # oral
        dose(2, 0.0, 50.0, 2, ii=8.0, addl=3), obs(2, times, 2),  # IV bolus
        dose(3, 1.0, 80.0, 2, rate=-2.0, ii=12.0, addl=2), obs(3, times, 2),  # modelled duration
    )
    base = predict(linear, M2, dict(P2, D2=3.0))
    scaled = predict(linear, M2, dict(P2, D2=3.0, F1=f1, F2=f2))
    fac = np.where(linear.loc[linear.EVID == 0, "ID"].to_numpy() == 1, f1, f2)
    assert_close_to_peak(scaled, fac * base, TIGHT, "F scales bolus / oral / modelled-duration profiles")
    # Fixed-rate infusion: the rate is kept, so F shortens the infusion (= dose F*AMT at RATE).
    fixed = predict(frame(dose(1, 0.0, 80.0, 2, rate=10.0, ii=12.0, addl=2), obs(1, times, 2)), M2, dict(P2, F2=f2))
    same = predict(frame(dose(1, 0.0, 80.0 * f2, 2, rate=10.0, ii=12.0, addl=2), obs(1, times, 2)), M2, P2)
    assert_close_to_peak(fixed, same, TIGHT, "F with a fixed-rate infusion")


def test_evid3_reset_and_evid4():
    times = np.arange(0.0, 60.0, 1.0)
    df = frame(
        # 1: oral q12 (ADDL 4 would reach 48 h), reset at 20 h cancels the rest, new dose at 30 h
        dose(1, 0.0, 100.0, 1, ii=12.0, addl=4), reset(1, 20.0), dose(1, 30.0, 70.0, 2), obs(1, times, 2),
        # 2: same history, EVID 4 dose at 30 h instead of reset + dose
        dose(2, 0.0, 100.0, 1, ii=12.0, addl=4), dose(2, 30.0, 70.0, 2, evid=4), obs(2, times, 2),
        # 3: fresh start: the 30 h dose alone
        dose(3, 30.0, 70.0, 2), obs(3, times, 2),
        # 4: a long infusion (20 h) running through a reset at 10 h
        dose(4, 0.0, 100.0, 2, rate=5.0), reset(4, 10.0), obs(4, times, 2),
        # 5: history without reset, for comparison before the reset
        dose(5, 0.0, 100.0, 1, ii=12.0, addl=4), obs(5, times, 2),
    )
    got = predict(df, M2, P2)
    p = {sid: got[obs_mask(df, sid)] for sid in range(1, 6)}
    pre = times < 20.0
    assert_close_to_peak(p[1][pre], p[5][pre], TIGHT, "before the reset")
    between = (times >= 20.0) & (times < 30.0)
    np.testing.assert_array_equal(p[1][between], 0.0)  # reset: every compartment emptied
    assert np.all(p[5][between] > 0)
    assert_close_to_peak(p[1][times >= 30.0], p[3][times >= 30.0], TIGHT, "EVID 3 then dose == fresh start")
    assert_close_to_peak(p[2][times >= 30.0], p[3][times >= 30.0], TIGHT, "EVID 4 == reset + dose")
    assert_close_to_peak(p[2][times < 30.0], p[5][times < 30.0], TIGHT, "EVID 4: history before it")
    assert np.all(p[4][(times > 0) & (times < 10.0)] > 0)
    np.testing.assert_array_equal(p[4][times >= 10.0], 0.0)  # reset stops the running infusion


def test_ss2_adds_to_existing_amount():
    times = np.arange(0.0, 80.0, 1.0)
    t_ss = 30.0
    cases = {  # SS=2 record (cmt, amt, rate, ii) on top of earlier history
        0: (2, 50.0, 0.0, 12.0),
        1: (2, 50.0, 25.0, 12.0),
        2: (1, 50.0, 0.0, 8.0),
    }
    both, hist, alone = [], [], []
    for k, (cmt, amt, rate, ii) in cases.items():
        history = [dose(k, 0.0, 100.0, 1, ii=6.0, addl=3), dose(k, 4.0, 30.0, 2, rate=10.0)]
        ss = dict(cmt=cmt, rate=rate, ii=ii, addl=2)
        both += history + [dose(k, t_ss, amt, ss=2, **ss)] + obs(k, times, 2)
        hist += history + obs(k, times, 2)
        alone += [dose(k, t_ss, amt, ss=1, **ss)] + obs(k, times, 2)
    p_both = predict(frame(*both), M2, P2)
    p_hist = predict(frame(*hist), M2, P2)
    p_alone = predict(frame(*alone), M2, P2)
    after = np.tile(times >= t_ss, len(cases))
    assert_close_to_peak(p_both[~after], p_hist[~after], TIGHT, "SS=2: before the record")
    assert_close_to_peak(p_both[after], p_hist[after] + p_alone[after], TIGHT, "SS=2 = history + SS=1 profile")
    # ...whereas SS=1 at the same place discards the history.
    p_ss1 = predict(frame(*[dict(r, SS=1) if r["SS"] == 2 else r for r in both]), M2, P2)
    assert_close_to_peak(p_ss1[after], p_alone[after], TIGHT, "SS=1 discards history")


def test_modelled_rate_and_duration_equal_fixed_rate():
    times = np.arange(0.0, 40.0, 0.5)
    f2 = 0.8
    amt, rate = 50.0, 20.0  # F * AMT / RATE = 2 h
    recs = lambda sid, r, ss=0: [dose(sid, 0.5, amt, 2, rate=r, ii=12.0, addl=2, ss=ss)] + obs(sid, times, 2)  # noqa: E731
    df = frame(*recs(1, rate), *recs(2, -1.0), *recs(3, -2.0), *recs(4, rate, 1), *recs(5, -1.0, 1), *recs(6, -2.0, 1))
    got = predict(df, M2, dict(P2, F2=f2, R2=rate, D2=f2 * amt / rate))
    p = {sid: got[obs_mask(df, sid)] for sid in range(1, 7)}
    assert_close_to_peak(p[2], p[1], TIGHT, "RATE=-1 with R2 vs fixed rate")
    assert_close_to_peak(p[3], p[1], TIGHT, "RATE=-2 with D2 vs fixed rate")
    assert_close_to_peak(p[5], p[4], TIGHT, "SS: RATE=-1 vs fixed rate")
    assert_close_to_peak(p[6], p[4], TIGHT, "SS: RATE=-2 vs fixed rate")
    # The modelled quantities may also come from data columns, per dose record.
    dfc = df.assign(RR=rate, DD=f2 * amt / rate)
    assert_close_to_peak(predict(dfc, M2, dict(P2, F2=f2, R2="RR", D2="DD")), got, TIGHT, "R2/D2 from columns")


def test_record_order_at_equal_times():
    v1 = P2["V1"]
    rows = [
        dose(1, 0.0, 20.0, 2),
        *obs(1, [5.0], 2),  # before the 5 h dose row: does not see it
        dose(1, 5.0, 100.0, 2),
        *obs(1, [5.0], 2),  # after: sees it
        *obs(2, [0.0], 2),  # pre-dose sample at time 0
        dose(2, 0.0, 100.0, 2),
        *obs(2, [0.0], 2),
        dose(3, 0.0, 100.0, 2, ii=5.0, addl=1),
        *obs(3, [5.0], 2),  # implied dose at 5 h is ordered before records at 5 h
    ]
    df = frame(*rows, sort=False)
    got = predict(df, M2, P2)
    only_first = predict(frame(dose(1, 0.0, 20.0, 2), obs(1, [5.0], 2)), M2, P2)[0]
    assert only_first > 0
    np.testing.assert_allclose(got[0], only_first, rtol=1e-12)
    np.testing.assert_allclose(got[1], only_first + 100.0 / v1, rtol=1e-12)
    assert got[2] == 0.0
    np.testing.assert_allclose(got[3], 100.0 / v1, rtol=1e-12)
    np.testing.assert_allclose(got[4], predict(frame(dose(3, 0.0, 100.0, 2), obs(3, [5.0], 2)), M2, P2)[0] + 100.0 / v1, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# 3. gradients vs central finite differences
# ---------------------------------------------------------------------------------------


def test_gradients_match_finite_differences():
    # Observation times avoid arrivals (0.6, 12.6, 0.4, 24.4 h) and infusion ends.
    times = np.array([0.3, 1.3, 2.1, 5.7, 9.2, 13.9, 17.3, 26.1, 31.7])
    df = frame(
        dose(1, 0.0, 100.0, 1, ii=12.0, addl=1), obs(1, times, 2),  # oral: KA, F1, ALAG1
        dose(2, 0.0, 80.0, 2, rate=-2.0, ii=24.0, addl=1), obs(2, times, 2),  # modelled duration D2
        dose(3, 0.0, 60.0, 2, rate=-1.0), obs(3, times, 2),  # modelled rate R2
        dose(4, 0.0, 50.0, 2, rate=10.0, ii=12.0, addl=2, ss=1), obs(4, times, 2),  # SS infusion
        dose(5, 0.0, 100.0, 1, ii=8.0, ss=1), obs(5, times, 2),  # SS oral
    )
    params = {"CL": 4.0, "V1": 12.0, "Q": 6.0, "V2": 25.0, "KA": 1.6,
              "F1": 0.7, "ALAG1": 0.6, "F2": 0.9, "ALAG2": 0.4, "D2": 3.3, "R2": 14.0}
    static, inputs, values = prepare_pk(df, M2, params)
    ids = list(pd.unique(df["ID"]))
    rows = np.flatnonzero(df["EVID"].to_numpy(int) == 0)
    t, o, _, mask = evaluation_keys(df, rows, ids, n_subjects=inputs["events"].time.shape[0])
    t, o = jnp.asarray(t), jnp.asarray(o)
    names = sorted(values)
    assert set(names) == {"CL", "V1", "Q2", "V2", "KA", "F1", "ALAG1", "F2", "ALAG2", "D2", "R2"}

    @jax.jit
    def f(x):
        theta = {k: x[i] for i, k in enumerate(names)}
        return pk_predictor(static, inputs, theta, t, o)[mask]

    x0 = jnp.asarray([float(values[k]) for k in names])
    jac = np.asarray(jax.jit(jax.jacfwd(f))(x0))
    grad_sum = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(x0))  # reverse mode too
    np.testing.assert_allclose(grad_sum, jac.sum(axis=0), rtol=1e-10, atol=1e-14)
    fd = np.empty_like(jac)
    for i in range(len(names)):
        h = 1e-6 * abs(float(x0[i]))
        e = jnp.zeros_like(x0).at[i].set(h)
        fd[:, i] = (np.asarray(f(x0 + e)) - np.asarray(f(x0 - e))) / (2 * h)
    for i, k in enumerate(names):
        scale = np.max(np.abs(fd[:, i]))
        assert scale > 0, f"d/d{k} is identically zero"
        np.testing.assert_allclose(jac[:, i], fd[:, i], rtol=1e-5, atol=1e-6 * scale, err_msg=f"d pred / d {k}")


# ---------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------


def test_predict_pk_equals_low_level_path():
    import pkpd.model.pk.predict

    times = np.arange(0.0, 60.0)
    df = frame(
        dose(1, 0.0, 100.0, 1, ii=12.0, addl=4, LAG=0.5), reset(1, 20.0), dose(1, 30.0, 70.0, 2, LAG=1.0),
        obs(1, times, 2),
        dose(2, 0.0, 100.0, 2, rate=-2.0, ii=12.0, addl=2, ss=1, LAG=0.5), obs(2, times, 2),
        dose(3, 0.0, 50.0, 2, rate=10.0, ii=8.0, addl=2, ss=1, LAG=0.5),
        dose(3, 4.0, 50.0, 1, ii=8.0, ss=2, LAG=0.5), obs(3, times, 2),
    )
    params = dict(P2, ALAG2="LAG", D2=3.0, F1=0.8)
    want = predict(df, M2, params)
    got = pkpd.model.pk.predict.predict_pk(df, M2, params)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_bad_dose_compartment_and_missing_modelled_rate_are_errors():
    """A dose into a compartment the model lacks, or RATE -1/-2 without R<n>/D<n>, is a clear error."""
    from pkpd.errors import ModelError
    from pkpd.model.pk.predict import prepare_pk

    base = dict(ID=1, TIME=0.0, DV=np.nan, AMT=100.0, EVID=1, MDV=1, CMT=3, RATE=0.0, II=0.0, ADDL=0, SS=0)
    obs = dict(base, TIME=1.0, AMT=0.0, EVID=0, CMT=0)
    with pytest.raises(ModelError, match="CMT 3"):
        prepare_pk(pd.DataFrame([base, obs]), "1cmt", {"CL": 1.0, "V": 10.0})
    with pytest.raises(ModelError, match="R1"):
        prepare_pk(pd.DataFrame([dict(base, CMT=1, RATE=-1.0), obs]), "1cmt", {"CL": 1.0, "V": 10.0})


def test_ka_equal_to_elimination_rate_is_finite():
    """KA = CL/V: the Bateman function's removable singularity gives the limit A*k*t*exp(-k t)."""
    df = pd.DataFrame([
        dict(ID=1, TIME=0.0, DV=np.nan, AMT=100.0, EVID=1, MDV=1, CMT=1, RATE=0.0, II=0.0, ADDL=0, SS=0),
        dict(ID=1, TIME=2.0, DV=np.nan, AMT=0.0, EVID=0, MDV=1, CMT=0, RATE=0.0, II=0.0, ADDL=0, SS=0),
    ])
    got = predict(df, "1cmt", {"CL": 1.5, "V": 1.0, "KA": 1.5})
    np.testing.assert_allclose(got, 100 * 1.5 * 2.0 * np.exp(-3.0), rtol=1e-6)


def _modes_50_digits(params, n):
    """Rates (ascending) and central-concentration coefficients ``[input cmt, mode]`` of a
    mammillary model from a 50-digit symmetric eigen-decomposition (mpmath), built from the
    parameters directly: an independent reference for the closed forms of ``pk_modes``."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp.clone()
    mp.dps = 50
    f = mp.mpf
    vols = [f(params["V1"])] + [f(params[f"V{j}"]) for j in range(2, n + 1)]
    qs = [f(params[f"Q{j}"]) for j in range(2, n + 1)]
    s = mp.matrix(n, n)
    s[0, 0] = (f(params["CL"]) + sum(qs)) / vols[0]
    for j in range(1, n):
        s[0, j] = s[j, 0] = -qs[j - 1] / mp.sqrt(vols[0] * vols[j])
        s[j, j] = qs[j - 1] / vols[j]
    w, u = mp.eigsy(s)
    order = sorted(range(n), key=lambda i: w[i])
    lam = np.array([float(w[i]) for i in order])
    coef = np.array([[float(u[0, i] * u[j, i] / mp.sqrt(vols[0] * vols[j])) for i in order] for j in range(n)])
    return lam, coef


@pytest.mark.parametrize("n", [2, 3])
def test_disposition_rates_and_residues_match_a_50_digit_eigen_decomposition(n):
    """The closed-form rates (quadratic / cubic roots, polished) and residues of ``pk_modes``
    against a 50-digit eigen-decomposition, over 200 random models whose micro-constants span
    up to nine decades (a slow peripheral beside fast elimination): rates to 1e-13 relative,
    coefficients to 1e-12 of the largest. (The former float64 LAPACK ``eigh`` of the scaled
    matrix loses relative accuracy on the slowest rate: error ~ eps * largest / smallest.)"""
    from pkpd.model.pk.closed_form import pk_modes

    rng = np.random.default_rng(7)
    fn = jax.jit(lambda p: pk_modes(p, f"{n}cmt", False))
    for _ in range(200):
        p = {"CL": 10 ** rng.uniform(-2, 2), "V1": 10 ** rng.uniform(0, 3)}
        for j in range(2, n + 1):
            p[f"Q{j}"], p[f"V{j}"] = 10 ** rng.uniform(-3, 2), 10 ** rng.uniform(0, 4)
        modes = fn({k: jnp.asarray(v) for k, v in p.items()})
        lam, coef = _modes_50_digits(p, n)
        np.testing.assert_allclose(np.asarray(modes.lam[:n]), lam, rtol=1e-13, atol=0)
        np.testing.assert_allclose(np.asarray(modes.coef[1:, :n]), coef, rtol=0, atol=1e-12 * np.max(np.abs(coef)))


def test_disposition_modes_gradients_match_finite_differences():
    """Forward and reverse derivatives of the closed-form modes (through the Newton-polished
    cubic roots) against central differences, 3 compartments with a depot."""
    from pkpd.model.pk.closed_form import pk_modes

    names = ["CL", "V1", "Q2", "V2", "Q3", "V3", "KA"]
    t = jnp.array([0.5, 2.0, 24.0, 200.0])

    def central(x):
        m = pk_modes(dict(zip(names, jnp.exp(x))), "3cmt", True)
        return jnp.sum(m.coef[1:, :, None] * jnp.exp(-m.lam[None, :, None] * t), axis=1)

    rng = np.random.default_rng(3)
    for _ in range(10):
        x = np.log([10 ** rng.uniform(-1, 1.5), 10 ** rng.uniform(0.5, 2), 10 ** rng.uniform(-1, 1.5),
                    10 ** rng.uniform(0.5, 3), 10 ** rng.uniform(-2, 1), 10 ** rng.uniform(0.5, 3),
                    10 ** rng.uniform(-1, 0.5)])
        h = 1e-6
        fd = np.stack([(np.asarray(central(jnp.asarray(x + h * e))) - np.asarray(central(jnp.asarray(x - h * e))))
                       / (2 * h) for e in np.eye(len(x))], axis=-1)
        for jac in (jax.jacrev(central), jax.jacfwd(central)):
            np.testing.assert_allclose(np.asarray(jac(jnp.asarray(x))), fd, rtol=0, atol=1e-7 * np.max(np.abs(fd)))


def test_three_compartment_rates_stay_accurate_when_two_are_far_below_the_third():
    """20,000 random 3-compartment models with micro-constants over up to 14 decades, many with
    two slow rates far below the fast one (where the trigonometric cubic formula alone is off by
    ~sqrt(eps) x the largest rate): the rates' sum, pairwise-product sum and product equal the
    characteristic polynomial's coefficients to 1e-11 relative, the rates are strictly ascending,
    and the central residues sum to 1 (a bolus starts in the central compartment)."""
    from pkpd.model.pk.closed_form import _disposition_modes

    rng = np.random.default_rng(11)
    n = 20_000
    cl, v1 = 10 ** rng.uniform(-3, 3, n), 10 ** rng.uniform(-1, 4, n)
    q2, v2, q3, v3 = (10 ** rng.uniform(lo, hi, n) for lo, hi in ((-6, 3), (-1, 5), (-6, 3), (-1, 5)))
    modes = jax.jit(jax.vmap(lambda c, a, b, d, e, g: _disposition_modes(c, [a, d, g], [b, e])))
    lam, residue = (np.asarray(a) for a in modes(cl, v1, q2, v2, q3, v3))
    k10, k12, k13, k21, k31 = cl / v1, q2 / v1, q3 / v1, q2 / v2, q3 / v3
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k21 * k31 + k12 * k31 + k13 * k21
    a0 = k10 * k21 * k31
    e2 = lam[:, 0] * lam[:, 1] + lam[:, 0] * lam[:, 2] + lam[:, 1] * lam[:, 2]
    assert np.max(np.abs(lam.sum(1) - a2) / a2) < 1e-11
    assert np.max(np.abs(e2 - a1) / a1) < 1e-11
    assert np.max(np.abs(lam.prod(1) - a0) / a0) < 1e-11
    assert np.all(np.diff(lam, axis=1) > 0)
    np.testing.assert_allclose(residue[:, 0, :].sum(1), 1.0, rtol=0, atol=1e-12)
