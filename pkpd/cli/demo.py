"""``pkpd demo``: the main job on the shipped example data.

Validates ``data/example.csv``, fits the population model (Kloft 2006 docetaxel card as
prior) to seven of its eight patients, then forecasts the held-out patient's second
cycle from the doses and counts of its first week, comparing the planned 100 mg/m2 with
a 20% dose reduction; prints the table and writes the fan chart and the JSON into the
output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._outputs import add_output_options, plan_folder

DEMO_CARD = "kloft2006_docetaxel"
CYCLE_H = 504.0
OUTPUT_FILES = ("forecast.json", "forecast.png", "population_fit.nc")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the shipped example data",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--data", help="data set to use (default: the shipped data/example.csv)")
    p.add_argument("--out", default="pkpd-demo", help="output folder (default ./pkpd-demo)")
    p.add_argument("--method", choices=["svi", "nuts"], default="svi",
                   help="population fit: SVI (default, about a minute) or NUTS (2 chains x 300, longer)")
    p.add_argument("--forecast-method", choices=["nuts", "laplace"], default="nuts")
    p.add_argument("--days", type=int, default=7, help="days of the held-out patient's counts used (default 7)")
    p.add_argument("--seed", type=int, default=1)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ._common import example_data

    out = Path(args.out)
    path = Path(args.data) if args.data else example_data()
    outputs = plan_folder("demo", "--out", out, OUTPUT_FILES, [("--data", path)], no_clobber=args.no_clobber)

    import pandas as pd

    from ..config import enable_compilation_cache
    from ..data.dataset import read_dataset
    from ..data.validation import check_dataset
    from ..errors import PkpdError
    from ..forecasting.forecast import forecast
    from ..infer.fit import fit

    enable_compilation_cache()
    start = time.perf_counter()
    print(f"== 1. Validate {path}")
    report = check_dataset(path)
    if report.violations:
        print(report.render())
    print(report.summary())
    if report.errors:
        return 2
    data = read_dataset(path)
    ids = list(data.ids)
    if len(ids) < 3:
        raise PkpdError("the demo needs at least 3 patients (one is held out)")
    held_out, train = ids[-1], ids[:-1]

    print(f"\n== 2. Population fit ({args.method.upper()}) of {DEMO_CARD} to patients {train[0]}-{train[-1]}")
    t0 = time.perf_counter()
    if args.method == "svi":
        population = fit(DEMO_CARD, data.subset(train), method="svi", seed=args.seed, svi_steps=4000,
                         learning_rate=0.02, svi_draws=500, progress=False)
    else:
        population = fit(DEMO_CARD, data.subset(train), method="nuts", chains=2, warmup=300, samples=300,
                         seed=args.seed, progress=False)
    with pd.option_context("display.width", 120):
        print(population.summary().to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"({time.perf_counter() - t0:.0f} s)")

    print(f"\n== 3. Forecast patient {held_out}'s second cycle from its first {args.days} days of counts")
    patient = data.subset([held_out]).df
    first_cycle = patient[patient["TIME"] <= 24.0 * args.days]  # doses and counts of the first week
    regimens = {"planned 100 mg/m2": f"100 mg/m2 1h @{CYCLE_H:g}h", "reduced 80 mg/m2": f"80 mg/m2 1h @{CYCLE_H:g}h"}
    t0 = time.perf_counter()
    fc = forecast(population, first_cycle.drop(columns=["LINE"]), regimen=list(regimens.values()),
                  regimen_names=list(regimens), horizon="21d", method=args.forecast_method, seed=args.seed,
                  ready=((CYCLE_H, 1.5),))
    table = fc.table()
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"({time.perf_counter() - t0:.0f} s)")
    for problem in fc.check():
        print(f"warning: {problem}")
    truth = data.subset([held_out]).df
    cycle2 = truth[(truth["EVID"] == 0) & (truth["DVID"] == 2) & (truth["TIME"] > CYCLE_H)]
    if len(cycle2):
        print(f"observed ANC in cycle 2 (not used): min {cycle2['DV'].min():.3g} x10^9/L on day "
              f"{(cycle2.loc[cycle2['DV'].idxmin(), 'TIME'] - CYCLE_H) / 24:.0f} after the dose")

    from ..io import atomic_paths

    # the three files are written together: an interrupt or a failure replaces none of them
    with atomic_paths([o.path for o in outputs], [".json", ".png", ".nc"],
                      overwrite=not args.no_clobber) as (json_tmp, png_tmp, fit_tmp):
        fc.to_json(json_tmp)
        fc.plot(png_tmp)
        population.save(fit_tmp)
    for o in outputs:
        print(o.wrote())
    print(f"(total {time.perf_counter() - start:.0f} s)")
    return 0
