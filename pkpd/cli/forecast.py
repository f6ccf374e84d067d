"""``pkpd forecast --prior CARD_OR_FIT --data patient.csv``: individual blood-count forecasts."""

from __future__ import annotations

from ._common import add_data_options, read_data
from ._outputs import add_output_options, plan_outputs
from ..errors import PkpdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "forecast",
        help="forecast a patient's blood counts (nadir, grade-4 risk, recovery) from the data so far",
        description="Condition a model card (or a saved population fit, whose uncertainty is integrated) on "
        "each patient's doses and counts so far, and forecast the next cycle under the doses in the data or "
        "under planned regimens.",
    )
    p.add_argument("--prior", required=True, help="model card name/path, or a saved fit (.nc)")
    p.add_argument("--data", required=True, help="patient data (NONMEM-style CSV; one or more IDs)")
    p.add_argument("--regimen", action="append", default=None,
                   help='planned doses, e.g. "100 mg/m2 1h @504h"; repeat to compare alternatives')
    p.add_argument("--horizon", default="21d", help="forecast horizon after the last record/planned dose "
                   "(hours or e.g. 21d; default 21d)")
    p.add_argument("--method", choices=("nuts", "laplace"), default="nuts")
    p.add_argument("--lineage", default="ANC", help="output to forecast (default ANC)")
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the forecast JSON here (atomically)")
    p.add_argument("--plot", help="write a fan chart PNG here (first patient; atomically)")
    add_output_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.draws < 2:
        raise PkpdError(f"--draws must be >= 2, got {args.draws}")
    outputs = plan_outputs("forecast", [("--json", args.json), ("--plot", args.plot)],
                           [("--data", args.data), ("--prior", args.prior)], no_clobber=args.no_clobber)
    from ..forecasting.forecast import forecast

    data = read_data(args)
    fc = forecast(args.prior, data, args.regimen, horizon=args.horizon, method=args.method, lineage=args.lineage,
                  draws=args.draws, seed=args.seed)
    table = fc.table()
    lineage = fc.lineage
    for e, (_, row) in zip(fc.entries, table.iterrows()):
        nad = e["nadir"]
        rec = e["recovery_h"]["1.5"]
        rec_txt = (f"day {rec['median'] / 24:.1f}" if rec["median"] is not None else "not reached") + \
            f" (P(not recovered) {rec['p_not_recovered']:.2f})"
        ready = ", ".join(f"P({lineage} >= {r['threshold']:g} on day {r['time_h'] / 24:g}) = {r['p']:.2f}"
                          for r in e["p_ready"]) or "-"
        print(f"patient {e['id']} | {e['regimen']}")
        print(f"  nadir {nad['median']:.3g} ({fc.interval:.0%} interval {nad['lo']:.3g}-{nad['hi']:.3g}) x10^9/L "
              f"on day {nad['time_h']['median'] / 24:.1f}")
        print(f"  P(grade 4) {e['p_grade']['4']:.2f}  P(grade >= 3) {e['p_grade']['3']:.2f}  "
              f"median grade-4 duration {row['grade4_days_median']:.1f} d")
        print(f"  recovery to 1.5: {rec_txt}")
        print(f"  readiness: {ready}")
    if outputs:
        from ..io import atomic_paths

        # written together: an interrupt or a failure replaces neither file
        suffixes = [".json" if out.option == "--json" else ".png" for out in outputs]
        with atomic_paths([out.path for out in outputs], suffixes, overwrite=not args.no_clobber) as tmps:
            for out, tmp in zip(outputs, tmps):
                if out.option == "--json":
                    fc.to_json(tmp)
                else:
                    fc.plot(tmp)
        for out in outputs:
            print(out.wrote())
    return 0
