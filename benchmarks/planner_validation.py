"""Does the supportive-care planner rank the plans as the truth does? (issue: whole marrow + planner)

Virtual patients are drawn from the card ``kloft2006_docetaxel_filgrastim`` (IIV and residual error
of the card; WT 70 kg, BSA 1.8 m2): docetaxel 100 mg/m2 1 h at time 0, ANC observed on days 0, 3, 5
and 7 (with error). For each patient the planner (Laplace, 300 draws) forecasts the next cycle
(docetaxel 100 mg/m2 at day 21) under four plans: "none", "pegfilgrastim 6 mg sc @24h", "dose 75%",
"delay 7d", and ranks them by P(grade 4 neutropenia). The truth: the same patient's true parameters
(``pkpd.simulate`` with the same seed, no residual error) under each plan, grade 4 = true nadir
< 0.5 in the cycle. Under the true parameters the probability of grade 4 is 0 or 1, so "options truly
differ by > 0.1" means some plan avoids grade 4 and some does not; the planner is right when the plan
it ranks best avoids it. The same is reported without the pegfilgrastim plan (a harder choice
between dose and delay).

Run: ``python benchmarks/planner_validation.py [--patients 40]`` (figures in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pkpd
from pkpd.dosing.regimen import parse_regimen
from pkpd.forecasting.planner import parse_plan

CARD = "kloft2006_docetaxel_filgrastim"
COV = {"WT": 70.0, "BSA": 1.8}
OPTIONS = ["none", "pegfilgrastim 6 mg sc @24h", "dose 75%", "delay 7d"]
CYCLE = parse_regimen("docetaxel 100 mg/m2 1h @504h")


def true_grade4(model, seed: int) -> np.ndarray:
    """Grade 4 (nadir < 0.5) in the next cycle under each plan, with the patient's true parameters."""
    out, params = [], None
    for option in OPTIONS:
        reg = parse_plan(option, CYCLE, 504.0, 504.0)
        start = min(d.start for d in reg.items)
        text = "docetaxel 100 mg/m2 1h; " + str(reg)
        times = np.arange(0.0, start + 504.0 + 1e-9, 1.0)
        sim, par = pkpd.simulate(model, text, 1, seed=seed, times=times, covariates=COV, residual=False,
                                 return_parameters=True)
        if params is None:
            params = par
        assert params.equals(par), "the same seed must give the same patient under every plan"
        obs = sim[(sim["EVID"] == 0) & (sim["DVID"] == 2)]
        after = obs["TIME"].to_numpy() >= start
        out.append(float(obs["IPRED"].to_numpy()[after].min()) < 0.5)
    return np.array(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--draws", type=int, default=300)
    args = ap.parse_args()
    pkpd.enable_x64()
    model = pkpd.load_model(CARD)
    rows = []
    t_start = time.perf_counter()
    for k in range(args.patients):
        seed = 1000 + k
        sim = pkpd.simulate(model, "docetaxel 100 mg/m2 1h", 1, seed=seed, times=np.array([0.0, 72.0, 120.0, 168.0]),
                            covariates=COV)
        patient = pkpd.read_dataset(sim.drop(columns=["IPRED"]))
        plan = pkpd.plan(model, patient, OPTIONS, covariates=COV, method="laplace", draws=args.draws, seed=k)
        t = plan.table
        p = np.array([float(t[(t["plan"] == o) & (t["endpoint"] == "P(grade 4 neutropenia)")]["value"].iloc[0])
                      for o in OPTIONS])
        truth = true_grade4(model, seed)
        rows.append((p, truth))
        print(f"patient {k + 1}: P(grade 4) {np.round(p, 2).tolist()}  truth {truth.astype(int).tolist()}", flush=True)
    print(f"\n{args.patients} patients in {time.perf_counter() - t_start:.0f} s")
    for label, keep in (("all four plans", list(range(len(OPTIONS)))), ("without pegfilgrastim", [0, 2, 3])):
        differ = right = 0
        for p, truth in rows:
            p, truth = p[keep], truth[keep]
            if truth.min() == truth.max():
                continue
            differ += 1
            right += int(not truth[int(np.argmin(p))])
        share = right / differ if differ else float("nan")
        print(f"{label}: truth differs between plans for {differ} patients; the planner's best plan avoids grade 4 "
              f"in {right} ({share:.0%})")


if __name__ == "__main__":
    main()
