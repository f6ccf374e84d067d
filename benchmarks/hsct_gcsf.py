"""HSCT: the endogenous-G-CSF feedback model (Quartino 2014 structure) fitted jointly to real transplant
granulocyte and G-CSF series, and engraftment days from the data and from the fitted individual trajectories.

Data: Melenhorst et al. Haematologica 2012 (CRAN npmlda ``HSCT``; /work/shared/external README section 7),
20 patients, myeloablative conditioning then allogeneic HSCT, granulocytes (10^9/L) and serum G-CSF (pg/mL)
every 2-4 days from about day -8 to day +35. Model: models/hsct_gcsf_feedback.toml (K-PD virtual conditioning
drug, unit bolus at day -7; see the card's notes for every assumption).

Run::

    python benchmarks/hsct_gcsf.py [--method map|svi] [--steps N]

Time origin of the pkpd data set: day -8 (TIME = (DAY + 8) * 24 h; no visit is earlier), so the virtual
conditioning dose (1 mg, CMT 1) sits at TIME = 24 h (day -7). G-CSF values exactly 0 are censored (CENS = 1)
at LLOQ = the smallest positive G-CSF value in the data (0.12 pg/mL; the assay limit is not documented).

Engraftment (ASTCT): first of 3 consecutive days with ANC >= 0.5 x 10^9/L after the nadir. Visits are not
daily, so the observed series is linearly interpolated to whole days (the same rule,
:func:`pkpd.forecasting.endpoints.engraftment_day`, is applied to the data and to the predictions). As a
second, cruder reading the first of 3 consecutive *visits* >= 0.5 after the nadir visit is also reported.
Patients whose series does not start before the nadir (first visit after day +3) or never drop below 0.5 are
flagged and left out of the error summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "hsct_gcsf_feedback.toml"
ORIGIN_DAY = -8.0  # TIME = (DAY - ORIGIN_DAY) * 24 h
CONDITIONING_DAY = -7.0  # assumed conditioning start (card notes)
DVID_ANC, DVID_GCSF = 2, 6  # pkpd's default DVIDs (the file uses 1 = granulocytes, 2 = G-CSF)


def data_path() -> Path:
    return Path(os.environ.get("PKPD_EXTERNAL", "/work/shared/external")) / "npmlda-hsct" / "hsct_long.csv"


def read_hsct(path=None) -> pd.DataFrame:
    """The HSCT long file as a DataFrame (columns ID, TIME, DAY, DV, DVID, ...)."""
    path = Path(path) if path is not None else data_path()
    if not path.is_file():
        raise FileNotFoundError(f"HSCT data not found at {path} (set PKPD_EXTERNAL to the folder holding "
                                "npmlda-hsct/hsct_long.csv)")
    return pd.read_csv(path)


def granulocytes(raw: pd.DataFrame) -> dict:
    """``{ID: (days, granulocytes)}`` of each patient, sorted by day."""
    g = raw[raw["DVID"] == 1].sort_values(["ID", "DAY"])
    return {int(i): (s["DAY"].to_numpy(float), s["DV"].to_numpy(float)) for i, s in g.groupby("ID")}


def engraftment_from_data(days, anc, threshold=0.5, consecutive=3):
    """``(interpolated, visits)``: engraftment day from linear interpolation to whole days (pkpd's
    ``engraftment_day``) and from consecutive visits (first of 3 successive visits >= threshold at or
    after the nadir visit). NaN when not reached."""
    from pkpd.forecasting.endpoints import engraftment_day

    interp = float(engraftment_day(np.asarray(days, float), np.asarray(anc, float), threshold=threshold,
                                   consecutive=consecutive, unit="d"))
    nadir = int(np.argmin(anc))
    ok = anc >= threshold
    visits = np.nan
    for k in range(nadir, len(anc) - consecutive + 1):
        if ok[k: k + consecutive].all():
            visits = float(days[k])
            break
    return interp, visits


def bracket(days, anc, threshold=0.5):
    """``(last_below, first_above)``: the visit days around the first crossing of ``threshold`` after the
    nadir visit (the true first day >= threshold lies in ``(last_below, first_above]``); NaN if none."""
    nadir = int(np.argmin(anc))
    above = np.flatnonzero(anc[nadir:] >= threshold)
    if above.size == 0:
        return np.nan, np.nan
    k = nadir + int(above[0])
    return float(days[k - 1]), float(days[k])


def evaluable(days, anc, threshold=0.5) -> bool:
    """A patient is evaluable when the series starts by day +3 and drops below the threshold."""
    return bool(days[0] <= 3 and anc.min() < threshold)


def build_dataset(raw: pd.DataFrame):
    """The pkpd data set: observations on TIME = (DAY + 8) * 24 h, DVIDs 2 (ANC) / 6 (GCSF), censored
    G-CSF zeros, plus one virtual conditioning dose (1 mg, CMT 1) per patient at day -7."""
    import pkpd

    obs = raw.copy()
    obs["TIME"] = (obs["DAY"] - ORIGIN_DAY) * 24.0
    obs["DVID"] = obs["DVID"].map({1: DVID_ANC, 2: DVID_GCSF})
    lloq = float(raw.loc[(raw["DVID"] == 2) & (raw["DV"] > 0), "DV"].min())
    zero = (obs["DVID"] == DVID_GCSF) & (obs["DV"] <= 0)
    obs["CENS"] = zero.astype(int)
    obs["LLOQ"] = np.where(zero, lloq, np.nan)
    obs["DV"] = np.where(zero, lloq, obs["DV"])
    obs["CMT"] = 0
    doses = pd.DataFrame({"ID": sorted(obs["ID"].unique())})
    doses["TIME"] = (CONDITIONING_DAY - ORIGIN_DAY) * 24.0
    doses["DAY"] = CONDITIONING_DAY
    for col, v in dict(DV=np.nan, AMT=1.0, EVID=1, MDV=1, CMT=1, DVID=0, CENS=0, LLOQ=np.nan).items():
        doses[col] = v
    df = pd.concat([doses, obs], ignore_index=True)
    df["_dose_first"] = (df["EVID"] != 1).astype(int)
    df = df.sort_values(["ID", "TIME", "_dose_first", "DVID"]).drop(columns=["_dose_first", "DAY"])
    df = df.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pkpd.read_dataset(df, units={"GCSF": "pg/mL"})
    return ds, lloq, int(zero.sum())


def individual_trajectories(model, ds, theta: dict, days):
    """Predicted ANC and G-CSF ``[n, len(days)]`` of every subject at ``days`` (relative to transplant)."""
    import jax.numpy as jnp

    from pkpd.solve.solver import SolverOptions, predict_outputs

    canon = ds.df.reset_index(drop=True)
    ids = list(ds.ids)
    n = len(ids)
    n_sub = int(next(iter(theta.values())).shape[0])
    system, data = model.prepare(canon, ids, n_subjects=n_sub)
    t = np.broadcast_to((np.asarray(days, float) - ORIGIN_DAY) * 24.0, (n_sub, len(days)))
    order = np.full_like(t, float(len(canon) + 1))  # after every record at the same time
    out, ok, _ = predict_outputs(system, data, theta, jnp.asarray(t), jnp.asarray(order),
                                 SolverOptions(solver="kvaerno5", rtol=1e-8, atol=1e-10, max_steps=20000))
    return {k: np.asarray(v)[:n] for k, v in out.items()}, np.asarray(ok)[:n]


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    good = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[good], y[good]).statistic) if good.sum() > 2 else np.nan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("map", "svi"), default="map")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args(argv)
    try:
        raw = read_hsct()
    except FileNotFoundError as err:
        print(f"hsct_gcsf: {err}", file=sys.stderr)
        return 2

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import pkpd
    from pkpd.forecasting.endpoints import engraftment_day
    from pkpd.solve.solver import SolverOptions

    model = pkpd.load_model(CARD)
    ds, lloq, n_cens = build_dataset(raw)
    print(f"data: {raw['ID'].nunique()} patients, {int((raw['DVID'] == 1).sum())} granulocyte and "
          f"{int((raw['DVID'] == 2).sum())} G-CSF values; {n_cens} G-CSF censored (M3) at LLOQ {lloq:g} pg/mL")
    print(f"versions: pkpd {pkpd.__version__}, jax {jax.__version__}; {os.cpu_count()} CPU(s)")

    start = time.perf_counter()
    solver = SolverOptions(solver="tsit5", rtol=1e-6, atol=1e-8, max_steps=8192)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pkpd.fit(model, ds, method=args.method, svi_steps=args.steps, learning_rate=args.lr, seed=0,
                       progress=False, svi_draws=200, log_likelihood=False, solver=solver)
    wall = time.perf_counter() - start
    problem = fit.problem
    print(f"fit: {args.method.upper()} {fit.settings.get('steps_run')} steps, converged "
          f"{fit.settings.get('converged')}, final loss {fit.settings.get('final_loss'):.2f}, wall {wall:.0f} s")
    print(f"estimated: {list(problem.estimated)}; IIV on {list(problem.iiv)}; fixed "
          f"{ {k: round(v, 5) for k, v in problem.fixed.items()} }")
    table = fit.summary()
    print("\nfitted population values (posterior mean; MAP: the point estimate)")
    for name, row in table.iterrows():
        print(f"  {name:14s} {row['mean']:.4g}")
    circ0 = float(table.loc["tv_Circ0", "mean"]) if "tv_Circ0" in table.index else problem.fixed["Circ0"]
    kanc = float(table.loc["tv_kANC", "mean"]) if "tv_kANC" in table.index else problem.fixed["kANC"]
    ke = problem.fixed.get("ke", np.nan)
    print(f"  implied G-CSF rise at ANC = 0: 1 + kANC*Circ0/ke = {1 + kanc * circ0 / ke:.1f}-fold "
          f"(Quartino: {1 + 5.64 * 3.53 / 0.592:.1f})")

    # Individual parameters: posterior mean of the latent sites (MAP: the point estimate).
    post = fit.idata.posterior
    sample = {v: jnp.asarray(post[v].values.reshape((-1,) + post[v].shape[2:]).mean(axis=0))
              for v in post.data_vars if not v.startswith("tv_")}
    theta, _ = problem.params_from_sample(sample)
    ids = list(ds.ids)

    # Predictions at the observations (for the correlation) and on a daily grid (engraftment).
    pred_obs, ok_obs = problem.predictions(theta)
    a = problem.arrays
    mask = np.asarray(a["mask"])[: problem.n_real]
    out = np.asarray(a["out"])[: problem.n_real]
    t_obs = np.asarray(a["t"])[: problem.n_real]
    val = np.asarray(a["value"])[: problem.n_real]
    cens = np.asarray(a["cens"])[: problem.n_real]
    pred = np.asarray(pred_obs)[: problem.n_real]
    k_anc, k_g = problem.outputs.index("ANC"), problem.outputs.index("GCSF")
    pairs_obs, pairs_pred, per_obs, per_pred = [], [], [], []
    for s in range(problem.n_real):
        ta = t_obs[s][mask[s] & (out[s] == k_anc)]
        tg = t_obs[s][mask[s] & (out[s] == k_g) & ~cens[s]]
        common = np.intersect1d(ta, tg)
        if common.size == 0:
            continue
        ia = [np.flatnonzero(mask[s] & (out[s] == k_anc) & (t_obs[s] == t))[0] for t in common]
        ig = [np.flatnonzero(mask[s] & (out[s] == k_g) & (t_obs[s] == t))[0] for t in common]
        lo = np.log(np.c_[val[s][ia], val[s][ig]])
        lp = np.log(np.c_[pred[s][ia], pred[s][ig]])
        pairs_obs.append(lo)
        pairs_pred.append(lp)
        if common.size >= 5:
            per_obs.append(spearman(lo[:, 0], lo[:, 1]))
            per_pred.append(spearman(lp[:, 0], lp[:, 1]))
    po, pp = np.vstack(pairs_obs), np.vstack(pairs_pred)
    print("\ninverse G-CSF / ANC relation (Spearman rho of log G-CSF vs log ANC at visits with both, "
          "uncensored G-CSF)")
    print(f"  pooled: observed {spearman(po[:, 0], po[:, 1]):+.3f}, individual predictions "
          f"{spearman(pp[:, 0], pp[:, 1]):+.3f} (n = {len(po)} visits)")
    print(f"  per patient (>= 5 visits, {len(per_obs)} patients), median: observed {np.nanmedian(per_obs):+.3f}, "
          f"predicted {np.nanmedian(per_pred):+.3f}")
    ares = {}
    for k, o in ((k_anc, "ANC"), (k_g, "GCSF")):
        sel = mask & (out == k) & ~cens
        r = np.log(val[sel]) - np.log(pred[sel])
        ares[o] = r
        print(f"  {o}: log residuals (obs - ipred) mean {r.mean():+.3f}, sd {r.std():.3f}, n {r.size}")

    days = np.arange(-8.0, 36.0, 0.25)
    traj, ok = individual_trajectories(model, ds, theta, days)
    print(f"\nengraftment day (first of 3 consecutive days ANC >= 0.5 after the nadir); solves ok "
          f"{int(ok.sum())}/{len(ok)}")
    print("  ID  first  nadir(obs)  bracket(visits)  data:interp  data:visits  model  model-data  note")
    series = granulocytes(raw)
    errors, dense, inside = [], [], []
    rows = []
    for s, sid in enumerate(ids):
        d, y = series[int(sid)]
        e_int, e_vis = engraftment_from_data(d, y)
        e_mod = float(engraftment_day(days, traj["ANC"][s], unit="d"))
        good = evaluable(d, y)
        note = "" if good else "not evaluable (series starts after day +3 or never < 0.5)"
        lo, hi = bracket(d, y)
        if good and np.isfinite(e_int) and np.isfinite(e_mod):
            errors.append(e_mod - e_int)
            if hi - lo <= 4:
                dense.append(e_mod - e_int)
            inside.append(lo < e_mod <= hi)
        if good and hi - lo > 4:
            note = f"gap of {hi - lo:.0f} d between the bracketing visits"
        rows.append((sid, d[0], y.min(), e_int, e_vis, e_mod))
        print(f"  {int(sid):2d}  {d[0]:+5.0f}  {y.min():10.3f}  ({lo:+3.0f}, {hi:+3.0f}]       {e_int:11.0f}  "
              f"{e_vis:11.0f}  {e_mod:5.0f}  {(e_mod - e_int) if good else np.nan:+10.0f}  {note}")
    err = np.asarray(errors)
    dense = np.asarray(dense)
    print(f"\nengraftment error model - data (interpolated), {err.size} evaluable patients: "
          f"median absolute error {np.median(np.abs(err)):.1f} d, bias (mean) {err.mean():+.2f} d, "
          f"median {np.median(err):+.1f} d, range [{err.min():+.0f}, {err.max():+.0f}] d, "
          f"within 2 d: {int((np.abs(err) <= 2).sum())}/{err.size}")
    print(f"  patients whose bracketing visits are <= 4 d apart ({dense.size}): median absolute error "
          f"{np.median(np.abs(dense)):.1f} d, bias {dense.mean():+.2f} d")
    print(f"  model day inside the bracket of visits (last < 0.5, first >= 0.5]: {int(np.sum(inside))}/{len(inside)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
