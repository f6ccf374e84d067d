"""``pkpd forecast --prior CARD_OR_FIT --data patient.csv``: individual blood-count forecasts."""

from __future__ import annotations

from ._common import add_data_options, read_patients
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
                   help='planned doses, e.g. "100 mg/m2 1h @504h", or "none" (only the doses in the data); '
                        'repeat to compare alternatives')
    p.add_argument("--horizon", default="21d", help="forecast horizon after the last record/planned dose "
                   "(hours or e.g. 21d; default 21d)")
    p.add_argument("--method", choices=("nuts", "laplace"), default="nuts")
    p.add_argument("--lineage", default=None,
                   help="output to forecast: ANC, PLT, HGB or WBC (default: every one the model outputs; ANC is "
                        "printed first)")
    p.add_argument("--compare", action="store_true",
                   help="compare the regimens on the same posterior draws: paired differences of the endpoints "
                        "against the first --regimen (median, interval, P(better)); the JSON gains 'comparison'")
    p.add_argument("--ids", help="forecast only these patient IDs (comma-separated)")
    p.add_argument("--until", help="use the data up to this time only (hours or e.g. 7d): the counts so far")
    p.add_argument("--covariate", action="append", default=None, metavar="NAME=VALUE",
                   help="set a covariate for every patient, e.g. WT=70 (repeat for several)")
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
    from ..config import enable_compilation_cache
    from ..forecasting.forecast import forecast

    enable_compilation_cache()  # a warm second run reuses the compiled solves
    data, covariates = read_patients(args)
    if args.compare:
        if not args.regimen or len(args.regimen) < 2:
            raise PkpdError("--compare needs at least two --regimen options (the first is the reference)")
        from ..forecasting.compare import compare_regimens

        result = compare_regimens(args.prior, data, args.regimen, horizon=args.horizon, method=args.method,
                                  lineage=args.lineage, draws=args.draws, seed=args.seed,
                                  covariates=covariates or None)
        fc = result.forecast
    else:
        result = None
        fc = forecast(args.prior, data, args.regimen, horizon=args.horizon, method=args.method,
                      lineage=args.lineage, draws=args.draws, seed=args.seed, covariates=covariates or None)
    _print_entries(fc)
    for problem in fc.check():
        print(f"warning: {problem}")
    if result is not None:
        print()
        print(result.text())
    if outputs:
        from ..io import atomic_paths

        # written together: an interrupt or a failure replaces neither file
        suffixes = [".json" if out.option == "--json" else ".png" for out in outputs]
        with atomic_paths([out.path for out in outputs], suffixes, overwrite=not args.no_clobber) as tmps:
            for out, tmp in zip(outputs, tmps):
                if out.option == "--json":
                    (result or fc).to_json(tmp)
                else:
                    fc.plot(tmp)
        for out in outputs:
            print(out.wrote())
    return 0


def _print_entries(fc) -> None:
    """Per lineage, patient and regimen: nadir, grades, time below the grade-4 bound, recovery, readiness."""
    from ..forecasting.lineage import get_lineage

    for lin in fc.lineages:
        spec = get_lineage(lin)
        table = fc.table(lin)
        level = spec.readiness if spec.readiness is not None else (spec.recovery[0] if spec.recovery else None)
        top = spec.max_grade
        for e, (_, row) in zip(fc.lineage_entries[lin], table.iterrows()):
            nad = e["nadir"]
            print(f"patient {e['id']} | {e['regimen']} | {lin}")
            print(f"  nadir {nad['median']:.3g} ({fc.interval:.0%} interval {nad['lo']:.3g}-{nad['hi']:.3g}) "
                  f"{spec.unit} on day {nad['time_h']['median'] / 24:.1f}")
            grades = f"P(grade >= 3) {e['p_grade']['3']:.2f}"
            if top == 4:
                grades = f"P(grade 4) {e['p_grade']['4']:.2f}  " + grades + \
                    f"  median grade-4 duration {row['grade4_days_median']:.1f} d"
            print(f"  {grades}")
            if level is not None:
                rec = e["recovery_h"][repr(float(level))]
                rec_txt = (f"day {rec['median'] / 24:.1f}" if rec["median"] is not None else "not reached") + \
                    f" (P(not recovered) {rec['p_not_recovered']:.2f})"
                print(f"  recovery to {level:g}: {rec_txt}")
            for r, p in (e.get("p_transfusion") or {}).items():
                print(f"  P(nadir < {float(r):g}) {p:.2f}")
            ready = ", ".join(f"P({lin} >= {r['threshold']:g} on day {r['time_h'] / 24:g}) = {r['p']:.2f}"
                              for r in e["p_ready"])
            if ready:
                print(f"  readiness: {ready}")
