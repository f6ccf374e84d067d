"""HSCT: forecast each real patient's neutrophil engraftment day from the counts up to day +7 with the
Stiehl/Marciniak-Czochra reconstitution card, and compare with the day observed in the full data.

Data: Melenhorst et al. Haematologica 2012 (CRAN npmlda ``HSCT``; /work/shared/external README section 7),
20 patients, myeloablative conditioning then allogeneic HSCT, granulocytes (10^9/L) every 2-4 days from about
day -8 to day +35 (G-CSF not used here). Model: models/hsct_reconstitution.toml.

Run::

    python benchmarks/hsct_engraftment.py [--draws 300] [--cutoff 7] [--ids 1 2 ...] [--pre-transplant]
                                          [--crossfit K] [--card PATH]

Prior: by default the card's population values. Since 2026-12-01 the card (3-compartment post-mitotic maturation
chain) has its progenitor division rate p2 calibrated so that its typical patient engrafts on day 11, the median
engraftment day of these patients: the card-as-prior figures therefore use one summary of this cohort (leakage,
stated in benchmarks/README.md); ``--crossfit K`` does not depend on it. ``--card PATH`` runs another card of the
same structure and dose records (ablations; its file name must be hsct_reconstitution.toml). With
``--crossfit K`` (K-fold cross-fitting, the cheaper cousin of leave-one-out): the patients are split into K
folds (sorted IDs, every K-th), the card is fitted (population MAP, IIV estimated) to the full post-transplant
series of the patients of the other folds, and that fit is the prior of the held-out fold's forecasts.

Data used for a forecast: by default the counts from day 0 to day +7 (``--pre-transplant`` adds the earlier
ones). The pre-transplant counts are the recipient's own (diseased, often pre-treated) marrow: several patients
start below 1 x 10^9/L, and the card's single set point Circ0 would then also be the engrafted donor set point.

Data set: TIME = (DAY + 8) * 24 h (day -8 is time 0; no visit is earlier); per patient a virtual conditioning
dose (100 virtual mg, CMT 1) at day -3 and the graft at day 0 as two records of the assumed typical cell dose
(5 x 10^6 CD34+/kg, AMT 5 into CMT 2 -> stem cells and CMT 3 -> progenitors; the card's F2/F3 split it): the
cell dose is not in the data.

Forecast: ``pkpd.forecast(card, data.until(day +7), method="laplace", draws=300)``; the engraftment day of each
posterior trajectory draw is the first of 3 consecutive days with ANC >= 0.5 after the nadir (MODELS.md 6.3,
``pkpd.forecasting.endpoints.engraftment_day``) on the grid from day 0 (transplant) to day +7 + horizon (42 d);
draws not engrafted by then count as "not reached" (sorted as +inf). Observed day: the same rule on the data
interpolated to whole days (benchmarks/hsct_gcsf.py ``engraftment_from_data``). Patients without counts up to
day +7 (forecast = prior only), without a nadir before day +3, or never engrafting in the data are reported and
left out of the error summary, not dropped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "hsct_reconstitution.toml"
ORIGIN_DAY = -8.0  # TIME = (DAY - ORIGIN_DAY) * 24 h
CONDITIONING_DAY = -3.0  # virtual conditioning bolus (card notes)
GRAFT_DOSE = 5.0  # 10^6 CD34+ cells/kg, assumed typical PBSC dose [A]
CONDITIONING_DOSE = 100.0  # virtual mg (card notes)
CMT_CONDITIONING, CMT_STEM, CMT_PROGENITOR = 1, 2, 3
DVID_ANC = 2


def _hsct_gcsf():
    """benchmarks/hsct_gcsf.py as a module (the real-data reader and the engraftment days of the data)."""
    spec = importlib.util.spec_from_file_location("hsct_gcsf", ROOT / "benchmarks" / "hsct_gcsf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_hsct(path=None) -> pd.DataFrame:
    """The HSCT long file (see ``hsct_gcsf.read_hsct``)."""
    return _hsct_gcsf().read_hsct(path)


def observed_engraftment(raw: pd.DataFrame) -> dict:
    """``{ID: dict(interp, visits, evaluable, first_day, last_day, nadir_day)}`` from the full data."""
    bench = _hsct_gcsf()
    out = {}
    for sid, (days, anc) in bench.granulocytes(raw).items():
        interp, visits = bench.engraftment_from_data(days, anc)
        out[sid] = dict(interp=interp, visits=visits, evaluable=bench.evaluable(days, anc),
                        first_day=float(days[0]), last_day=float(days[-1]),
                        nadir_day=float(days[int(np.argmin(anc))]), bracket=bench.bracket(days, anc))
    return out


def build_dataset(raw: pd.DataFrame, graft_dose: float = GRAFT_DOSE, pre_transplant: bool = True):
    """The pkpd data set: granulocytes as ANC (DVID 2) on TIME = (DAY + 8) * 24 h, the virtual conditioning
    dose (100 virtual mg, CMT 1, day -3) and the graft (CMT 2 and CMT 3, ``graft_dose`` 10^6 cells/kg each, day 0).
    ``pre_transplant=False`` leaves out the counts before day 0 (the recipient's own marrow)."""
    import pkpd

    obs = raw[raw["DVID"] == 1].copy()
    if not pre_transplant:
        obs = obs[obs["DAY"] >= 0]
    obs["TIME"] = (obs["DAY"] - ORIGIN_DAY) * 24.0
    obs["DVID"] = DVID_ANC
    obs["CMT"] = 0
    obs = obs[["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "DVID"]]
    ids = sorted(obs["ID"].unique())
    doses = []
    for sid in ids:
        doses.append(dict(ID=sid, TIME=(CONDITIONING_DAY - ORIGIN_DAY) * 24.0, DV=np.nan, AMT=CONDITIONING_DOSE, EVID=1,
                          MDV=1, CMT=CMT_CONDITIONING, DVID=0))
        for cmt in (CMT_STEM, CMT_PROGENITOR):
            doses.append(dict(ID=sid, TIME=-ORIGIN_DAY * 24.0, DV=np.nan, AMT=float(graft_dose), EVID=1, MDV=1,
                              CMT=cmt, DVID=0))
    df = pd.concat([pd.DataFrame(doses), obs], ignore_index=True)
    df["_obs_first"] = (df["EVID"] == 1).astype(int)  # a day-0 count is taken before the infusion
    df = df.sort_values(["ID", "TIME", "_obs_first", "CMT"], kind="stable").drop(columns="_obs_first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pkpd.read_dataset(df.reset_index(drop=True))


def engraftment_draws(time_h, traj) -> np.ndarray:
    """Engraftment day (relative to transplant) of each trajectory ``[..., T]`` on ``time_h`` (h from
    day -8), counted on the days from the transplant on; NaN when not reached within the grid."""
    from pkpd.forecasting.endpoints import engraftment_day

    days = np.asarray(time_h, float) / 24.0 + ORIGIN_DAY
    keep = days >= 0.0
    return np.asarray(engraftment_day(days[keep], np.asarray(traj)[..., keep], unit="d"), float)


def summarise_days(draws, interval=0.9) -> dict:
    """Median and central ``interval`` of engraftment days; NaN draws (not reached) sort as +inf."""
    x = np.where(np.isfinite(draws), draws, np.inf)
    lo, med, hi = np.quantile(x, [(1 - interval) / 2, 0.5, (1 + interval) / 2], method="inverted_cdf")
    return dict(median=float(med), lo=float(lo), hi=float(hi), p_not=float(np.mean(~np.isfinite(draws))))


def forecast_engraftment(prior, ds, cutoff_day=7.0, draws=300, seed=0, horizon="35d", ids=None):
    """Forecast of every patient of ``ds`` from its records up to ``cutoff_day`` (relative to transplant);
    ``prior``: the card (population values) or a population :class:`pkpd.Fit`.

    Returns ``(forecast, {ID: engraftment-day draws})``.
    """
    import pkpd

    early = ds.until((cutoff_day - ORIGIN_DAY) * 24.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = pkpd.forecast(prior, early, method="laplace", draws=draws, seed=seed, horizon=horizon, ids=ids,
                           lineage="ANC", ready=())
    traj = np.asarray(fc.trajectories)[:, :, 0, :]  # [draws, patients, T]
    out = {}
    for p, sid in enumerate(fc.ids):
        out[int(sid)] = engraftment_draws(fc.time_h, traj[:, p, :])
    return fc, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--cutoff", type=float, default=7.0, help="last day (relative to transplant) of data used")
    parser.add_argument("--ids", type=int, nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pre-transplant", action="store_true",
                        help="also condition on the counts before day 0 (default: counts from day 0 to the cutoff)")
    parser.add_argument("--crossfit", type=int, default=0, metavar="K",
                        help="K-fold cross-fitting: population MAP fit of the card to the full post-transplant "
                             "series of the other folds' patients, used as the prior (default 0: the card)")
    parser.add_argument("--fit-steps", type=int, default=3000)
    parser.add_argument("--card", type=Path, default=CARD, help="model card (default models/hsct_reconstitution.toml)")
    args = parser.parse_args(argv)
    try:
        raw = read_hsct()
    except FileNotFoundError as err:
        print(f"hsct_engraftment: {err}", file=sys.stderr)
        return 2

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpyro

    import pkpd

    model = pkpd.load_model(args.card)
    ds = build_dataset(raw, pre_transplant=args.pre_transplant)
    ds_full = build_dataset(raw, pre_transplant=False)  # what a cross-fit learns from (other patients)
    obs = observed_engraftment(raw)
    print(f"data: {raw['ID'].nunique()} patients, {int((raw['DVID'] == 1).sum())} granulocyte values; "
          f"card {args.card}; forecast from counts {'(pre-transplant included) ' if args.pre_transplant else 'from day 0 '}"
          f"up to day {args.cutoff:+g}; prior: {'card population values' if args.crossfit < 2 else f'{args.crossfit}-fold cross-fit (MAP)'}")
    print(f"versions: pkpd {pkpd.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, "
          f"python {platform.python_version()}; {os.cpu_count()} CPU(s); {time.strftime('%Y-%m-%d')}")
    series = _hsct_gcsf().granulocytes(raw)
    wanted = [int(i) for i in (args.ids if args.ids else ds.ids)]
    # pkpd.forecast needs at least one count to condition on: patients without a count by the cutoff are
    # reported below, not forecast
    first_day = -np.inf if args.pre_transplant else 0.0
    in_window = lambda d: (d >= first_day) & (d <= args.cutoff)  # noqa: E731
    early_ids = [i for i in wanted if np.any(in_window(series[i][0]))]
    start = time.perf_counter()
    eng = {}
    if args.crossfit < 2:
        fc, eng = forecast_engraftment(model, ds, cutoff_day=args.cutoff, draws=args.draws, seed=args.seed,
                                       ids=early_ids)
    else:
        from pkpd.solve.solver import SolverOptions

        everyone = [int(i) for i in ds_full.ids]
        for k in range(args.crossfit):
            held = [i for j, i in enumerate(everyone) if j % args.crossfit == k]
            train = [i for i in everyone if i not in held]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = pkpd.fit(model, ds_full.subset(train), method="map", svi_steps=args.fit_steps, seed=0,
                               progress=False, log_likelihood=False,
                               solver=SolverOptions(solver="tsit5", rtol=1e-6, atol=1e-8, max_steps=8192))
            table = fit.summary()
            tv = {n[3:]: round(float(r["mean"]), 4) for n, r in table.iterrows() if n.startswith("tv_")}
            print(f"fold {k + 1}/{args.crossfit}: fit on {len(train)} patients ({fit.settings.get('steps_run')} "
                  f"steps), typical values {tv}")
            todo = [i for i in held if i in early_ids]
            if todo:
                _, part = forecast_engraftment(fit, ds, cutoff_day=args.cutoff, draws=args.draws, seed=args.seed,
                                               ids=todo)
                eng.update(part)
    wall = time.perf_counter() - start
    print(f"forecast: Laplace, {args.draws} draws, {len(eng)} patients, wall {wall:.0f} s")

    print("\n| ID | counts used | observed (interp.) | observed (visits) | forecast median | 90% interval "
          "| P(not by day +42) | error | in 90% | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    errors, covered, rows = [], [], []
    for sid in wanted:
        days, _ = series[sid]
        n_early = int(np.sum(in_window(days)))
        o = obs[sid]
        s = summarise_days(eng[sid]) if sid in eng else dict(median=np.nan, lo=np.nan, hi=np.nan, p_not=np.nan)
        notes = []
        if n_early == 0:
            notes.append("no count in the data window: not forecast")
        if not o["evaluable"]:
            notes.append("not evaluable (series starts after day +3 or never < 0.5)")
        if not np.isfinite(o["interp"]):
            notes.append(f"no engraftment in the data (last visit day {o['last_day']:+.0f})")
        good = n_early > 0 and o["evaluable"] and np.isfinite(o["interp"])
        err = s["median"] - o["interp"] if good and np.isfinite(s["median"]) else np.nan
        inside = bool(s["lo"] <= o["interp"] <= s["hi"]) if good else None
        if good:
            errors.append(err)
            covered.append(inside)
        p_txt = "-" if np.isnan(s["p_not"]) else f"{s['p_not']:.2f}"
        fmt = lambda v: "-" if np.isnan(v) else ("not reached" if not np.isfinite(v) else f"{v:.0f}")  # noqa: E731
        rows.append(dict(ID=sid, n_early=n_early, observed=o["interp"], visits=o["visits"], median=s["median"],
                         lo=s["lo"], hi=s["hi"], p_not=s["p_not"], error=err, inside=inside))
        print(f"| {sid} | {n_early} | {fmt(o['interp'])} | {fmt(o['visits'])} | {fmt(s['median'])} | "
              f"[{fmt(s['lo'])}, {fmt(s['hi'])}] | {p_txt} | "
              f"{'' if not np.isfinite(err) else f'{err:+.0f}'} | {'' if inside is None else ('yes' if inside else 'no')} | "
              f"{'; '.join(notes)} |")
    err = np.asarray(errors, float)
    fin = err[np.isfinite(err)]
    print(f"\nevaluable patients: {len(errors)} (forecast median reached in {fin.size})")
    if fin.size:
        print(f"error (forecast median - observed, days): median absolute error {np.median(np.abs(fin)):.1f} d, "
              f"mean {fin.mean():+.2f} d, median {np.median(fin):+.1f} d, range [{fin.min():+.0f}, {fin.max():+.0f}], "
              f"quartiles of |error| {np.percentile(np.abs(fin), 25):.1f}/{np.percentile(np.abs(fin), 75):.1f} d, "
              f"within 2 d: {int((np.abs(fin) <= 2).sum())}/{fin.size}, within 4 d: "
              f"{int((np.abs(fin) <= 4).sum())}/{fin.size}")
    if covered:
        print(f"90% interval coverage: {int(np.sum(covered))}/{len(covered)} = {np.mean(covered):.2f}")
    width = [r["hi"] - r["lo"] for r in rows if np.isfinite(r["hi"]) and np.isfinite(r["lo"])]
    if width:
        print(f"90% interval width: median {np.median(width):.0f} d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
