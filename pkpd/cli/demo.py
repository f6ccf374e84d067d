"""``pkpd demo``: the main job on the shipped example data.

Validates ``data/example.csv`` and prints the drug concentrations the docetaxel
3-compartment PK of the Kloft 2006 card predicts beside the observed ones, then
simulates the typical patient's ANC course for one cycle and reports nadir and recovery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_CARD = "kloft2006_docetaxel"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the shipped example data",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--data", help="data set to use (default: the shipped data/example.csv)")
    p.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from pkpd.cli._common import example_data
    from pkpd.cli.pk import pk_from_card, predictions
    from pkpd.dataset import read_dataset
    from pkpd.validation import check_dataset

    path = Path(args.data) if args.data else example_data()
    print(f"== 1. Validate {path}")
    report = check_dataset(path)
    if report.violations:
        print(report.render())
    print(report.summary())
    if report.errors:
        return 2
    dataset = read_dataset(path)

    print(f"\n== 2. Docetaxel concentrations (mg/L): observed vs closed-form 3-cmt PK of card {DEMO_CARD}")
    model, params = pk_from_card(DEMO_CARD)
    table = predictions(dataset, model, params)
    conc = table[table["TYPE"] == "CONC"].drop(columns=["TYPE", "DVID"])
    with pd.option_context("display.width", 120):
        print(conc.head(12).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    ratio = conc["DV"] / conc["PRED"]
    print(f"... {len(conc)} concentrations; observed/predicted: median {np.median(ratio):.3f}, "
          f"90% range {np.quantile(ratio, 0.05):.2f}-{np.quantile(ratio, 0.95):.2f}")

    print(f"\n== 3. Typical patient of {DEMO_CARD}: 100 mg/m2 1-h infusion, BSA 1.8 m2")
    from pkpd.simulate import simulate

    times = np.arange(0.0, 21 * 24 + 1, 6.0)
    cov = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
    sim = simulate(DEMO_CARD, "100 mg/m2 1h", times=times, covariates=cov, iiv=False, residual=False)
    anc = sim.loc[sim["EVID"] == 0, ["TIME", "DV"]].to_numpy()
    i = int(np.argmin(anc[:, 1]))
    base = anc[0, 1]
    back = anc[i:][anc[i:, 1] >= base]
    print(f"ANC nadir {anc[i, 1]:.2f} x10^9/L on day {anc[i, 0] / 24:.1f}; "
          f"back to baseline {base:.2f} on day {back[0, 0] / 24:.1f}" if len(back) else "not back to baseline")
    return 0
