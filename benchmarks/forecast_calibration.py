"""Calibration of individual forecasts on virtual docetaxel patients (MODELS.md section 9 item 8).

``python benchmarks/forecast_calibration.py [--patients 200] [--method laplace|nuts] [--batch 16]``

N virtual patients are simulated from the Kloft 2006 card (its IIV) with the log-scale
residual SD overridden to 0.2 (a modified card), 100 mg/m2 docetaxel as a 1-h infusion,
BSA 1.8 and typical covariates, daily ANC for 21 days. Each patient is forecast with the
same card as prior from the counts up to days 3, 5, 7 and 9 (patients in vectorised
batches of ``--batch`` IDs per forecast call). Reported per cut-off day:

* sensitivity / specificity of "grade 4 ahead" (P(grade 4) >= 0.5) among patients whose
  true (noise-free) grade-4 onset is after the cut-off day (specificity: among patients
  who never reach grade 4);
* coverage of the 90% intervals of the true nadir and of the next observed count
  (posterior predictive, residual error included);
* median absolute error of the log nadir and of the day of recovery to baseline;
* warm time per forecast call and per patient.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

import pkpd
from pkpd.forecasting import endpoints as ep
from pkpd.forecasting.forecast import forecast
from pkpd.model.model import Model

CARD = "kloft2006_docetaxel"
COV = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
DAYS = (3, 5, 7, 9)


def model_with_sd(sd: float) -> Model:
    """The Kloft card with the ANC residual SD (log scale) replaced."""
    card = pkpd.load_card(CARD)
    error = dict(card.error)
    error["ANC"] = dataclasses.replace(error["ANC"], sd=float(sd))
    return Model(dataclasses.replace(card, error=error))


def simulate(model: Model, n: int, seed: int):
    days = np.arange(0, 22 * 24, 24.0)
    sim = pkpd.simulate(model, "100 mg/m2 1h", n, seed=seed, times=days, covariates=COV)
    hourly = pkpd.simulate(model, "100 mg/m2 1h", n, seed=seed, times=np.arange(0, 22 * 24 + 1, 1.0),
                           covariates=COV, residual=False)
    hourly = hourly[hourly["EVID"] == 0]
    t = np.arange(0, 22 * 24 + 1, 1.0)
    true = hourly["IPRED"].to_numpy().reshape(n, t.size)
    return sim, t, true


def truth_endpoints(t, true):
    nad, _ = ep.nadir(t, true, after=0.0)
    onset = ep.first_crossing(t, true, 0.5, direction="down")
    base = true[:, 0]
    rec = ep.recovery_time(t, true, base, after_nadir=True, after=0.0)
    return nad, onset, rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--method", choices=("laplace", "nuts"), default="laplace")
    ap.add_argument("--batch", type=int, default=16, help="patients per forecast call")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20, help="NUTS warm-up iterations (pkpd.forecast's default)")
    ap.add_argument("--seed", type=int, default=2017)
    args = ap.parse_args(argv)
    pkpd.enable_x64()
    model = model_with_sd(0.2)
    sim, t_true, true = simulate(model, args.patients, args.seed)
    nad_true, onset_true, rec_true = truth_endpoints(t_true, true)
    ids = list(pd.unique(sim["ID"]))
    obs = sim[sim["EVID"] == 0]
    dv = obs["DV"].to_numpy().reshape(len(ids), -1)  # daily, day 0..21
    rows = []
    for day in DAYS:
        cut = sim[sim["TIME"] <= day * 24 + 1e-9].drop(columns="IPRED").reset_index(drop=True)
        ds = pkpd.read_dataset(cut)
        p4, lo, hi, med, rec_med, nxt_lo, nxt_hi, times = [], [], [], [], [], [], [], []
        for start in range(0, len(ids), args.batch):
            batch = ids[start:start + args.batch]
            t0 = time.perf_counter()
            fc = forecast(model, ds, ids=batch, method=args.method, draws=args.draws, warmup=args.warmup,
                          seed=start, horizon="21d")
            elapsed = time.perf_counter() - t0
            if start > 0 or day != DAYS[0]:
                times.append((elapsed, len(batch)))
            for i, e in enumerate(fc.entries):
                p4.append(e["p_grade"]["4"])
                lo.append(e["nadir"]["lo"])
                hi.append(e["nadir"]["hi"])
                med.append(e["nadir"]["median"])
                r = e["recovery_h"]["baseline"]["median"]
                rec_med.append(np.nan if r is None else r)
            pp = fc.predictive((day + 1) * 24, seed=start)[:, :, 0]  # [draws, patients]
            q = np.quantile(pp, [0.05, 0.95], axis=0)
            nxt_lo += list(q[0])
            nxt_hi += list(q[1])
        p4, lo, hi, med = map(np.asarray, (p4, lo, hi, med))
        rec_med = np.asarray(rec_med)
        ahead = np.isfinite(onset_true) & (onset_true > day * 24)
        never = ~np.isfinite(onset_true)
        flag = p4 >= 0.5
        nxt = dv[:, day + 1]
        row = {
            "day": day,
            "n_g4_ahead": int(ahead.sum()),
            "sensitivity": float(flag[ahead].mean()) if ahead.any() else np.nan,
            "n_no_g4": int(never.sum()),
            "specificity": float((~flag[never]).mean()) if never.any() else np.nan,
            "cover_nadir90": float(np.mean((lo <= nad_true) & (nad_true <= hi))),
            "cover_next90": float(np.mean((np.asarray(nxt_lo) <= nxt) & (nxt <= np.asarray(nxt_hi)))),
            "mae_log_nadir": float(np.median(np.abs(np.log(med) - np.log(nad_true)))),
            "mae_recovery_d": float(np.nanmedian(np.abs(rec_med - rec_true)) / 24.0),
            "s_per_call": float(np.mean([a for a, _ in times])) if times else np.nan,
            "s_per_patient": float(sum(a for a, _ in times) / sum(b for _, b in times)) if times else np.nan,
        }
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False, float_format=lambda x: f"{x:.3f}"), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{args.patients} virtual patients, method {args.method}, {args.draws} draws, batches of {args.batch}; "
          f"true grade 4 in {int(np.isfinite(onset_true).sum())}")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
