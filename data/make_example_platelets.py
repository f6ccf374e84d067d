"""Generate data/example_platelets.csv: one simulated patient's platelets after HIPEC oxaliplatin.

Run from the repository root:  python data/make_example_platelets.py
The output is regenerated from the seed below: the random effects and the residual errors
are drawn with ``numpy.random.default_rng(SEED)`` (not JAX keys) and the counts rounded to
whole 10^9/L as a laboratory reports them, so the file does not depend on the JAX version.

Design: one patient (BSA 1.80 m2, 72 kg, not splenectomised) given cytoreductive surgery and
hyperthermic intraperitoneal oxaliplatin 360 mg/m2 (30 min) at time 0; platelet counts
(10^9/L) before the dose and on days 2, 4, 7, 10, 14, 17 and 21, when the count is falling
towards a nadir the model places around days 30-40. Records: the HIPEC dose into the
peritoneal depot (CMT 1, AMT mg, RATE mg/h), the surgery record (CMT 6, AMT 1) and the
counts (DVID 3, pkpd's default for PLT).
Model: models/oxaliplatin_romiplostim_platelets.toml (a joined model, see its notes) with
individual parameters drawn from its IIV and its residual error (additive on log PLT,
SD 0.25, here 0.10 so the example is readable: a lab count's error, not the model misfit).
Use: README example (pkpd forecast ... --lineage PLT --compare with and without romiplostim).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261130
CARD = "oxaliplatin_romiplostim_platelets"
OUT = Path(__file__).resolve().parent
COV = dict(BSA=1.8, WT=72.0, SPLEN=0)
DAYS = (0, 2, 4, 7, 10, 14, 17, 21)
SD_LOG = 0.10


def design() -> pd.DataFrame:
    dose = round(360.0 * COV["BSA"], 1)
    rows = [dict(ID=1, TIME=0.0, DVID=3, EVID=0)]  # pre-dose count
    rows.append(dict(ID=1, TIME=0.0, AMT=dose, RATE=dose / 0.5, CMT=1, EVID=1, DVID=0))
    rows.append(dict(ID=1, TIME=0.0, AMT=1.0, RATE=0.0, CMT=6, EVID=1, DVID=0))
    rows += [dict(ID=1, TIME=24.0 * d, DVID=3, EVID=0) for d in DAYS[1:]]
    df = pd.DataFrame(rows).fillna({"AMT": 0.0, "RATE": 0.0, "CMT": 0})
    df["MDV"] = (df["EVID"] != 0).astype(int)
    df["DV"] = np.nan
    for col in ("II", "ADDL", "SS"):
        df[col] = 0
    for k, v in COV.items():
        df[k] = v
    df["CMT"] = df["CMT"].astype(int)
    cols = ["ID", "TIME", "DV", "AMT", "RATE", "CMT", "EVID", "MDV", "II", "ADDL", "SS", "DVID", *COV]
    return df[cols]


def main() -> int:
    import pkpd

    pkpd.enable_x64()
    rng = np.random.default_rng(SEED)
    model = pkpd.load_model(CARD)
    df = design()
    eta = model.draw_etas(rng, 1)
    ids = [1]
    theta = model.individual_parameters(model.subject_covariates(df, ids), eta, n=1)
    from pkpd.stats.simulate import solve_design

    ipred, ok, _ = solve_design(model, df, theta)
    assert bool(np.all(ok))
    obs = (df["EVID"] == 0).to_numpy()
    plt = np.asarray(ipred, float)[obs]
    df.loc[obs, "DV"] = np.round(plt * np.exp(SD_LOG * rng.standard_normal(int(obs.sum()))))
    df.to_csv(OUT / "example_platelets.csv", index=False, na_rep=".", float_format="%.10g")
    print(f"wrote {OUT / 'example_platelets.csv'} ({len(df)} rows); true parameters:",
          {k: round(float(np.asarray(v).reshape(-1)[0]), 6) for k, v in theta.items()
           if k in ("PLT0", "ktr", "ks", "alpha", "CL", "KA")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
