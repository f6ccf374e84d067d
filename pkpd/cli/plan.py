"""``pkpd plan --prior CARD_OR_FIT --data patient.csv --option ...``: the supportive-care planner."""

from __future__ import annotations

from ._common import add_data_options, read_patients
from ._outputs import add_output_options, plan_outputs
from ..errors import PkpdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="compare supportive-care plans for a patient's next cycle (G-CSF, delay, dose, TPO-RA, ESA, "
             "transfusions) on every lineage",
        description="Forecast the next chemotherapy cycle under each --option from the same posterior draws and "
        "report, per plan: P(grade 4 neutropenia) and its expected duration, P(PLT < 10) and expected platelet "
        "transfusions, P(Hb < 8) and expected red-cell transfusions, P(ready for the following cycle), with "
        "paired differences against the first option. Options: 'none', 'delay 7d', 'dose 80%%', or a regimen "
        "timed from the cycle start ('pegfilgrastim 6 mg sc @24h'), joined by '+'.",
    )
    p.add_argument("--prior", required=True, help="model card name/path, or a saved fit (.nc)")
    p.add_argument("--data", required=True, help="patient data (NONMEM-style CSV)")
    p.add_argument("--option", action="append", required=True,
                   help='a plan, e.g. "none", "pegfilgrastim 6 mg sc @24h", "delay 7d", "dose 80%%", '
                        '"romiplostim 3 ug/kg sc weekly", "dose 80%% + pegfilgrastim 6 mg sc @24h"; repeat; the '
                        "first is the reference")
    p.add_argument("--transfuse", action="append", default=None, metavar="RULE",
                   help='transfusion rule, e.g. "PLT<10:1 unit" or "HGB<7:2 units" (one per lineage)')
    p.add_argument("--cycle", help="the next cycle with absolute times, e.g. \"docetaxel 100 mg/m2 1h @504h\" "
                   "(default: the patient's last chemotherapy dose repeated --cycle-length later)")
    p.add_argument("--cycle-length", default="21d", help="cycle length (default 21d): the default cycle's start "
                   "and the readiness day")
    p.add_argument("--horizon", default=None, help="forecast horizon after the last planned dose (default: the "
                   "cycle length)")
    p.add_argument("--method", choices=("nuts", "laplace"), default="nuts")
    p.add_argument("--ids", help="plan for these patient IDs (comma-separated; one when --cycle is not given)")
    p.add_argument("--until", help="use the data up to this time only (hours or e.g. 7d)")
    p.add_argument("--covariate", action="append", default=None, metavar="NAME=VALUE",
                   help="set a covariate, e.g. WT=70 (repeat for several)")
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the plan JSON here (atomically)")
    p.add_argument("--plot", help="write the figure (a row per lineage, a column per plan) here (atomically)")
    add_output_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.draws < 2:
        raise PkpdError(f"--draws must be >= 2, got {args.draws}")
    outputs = plan_outputs("plan", [("--json", args.json), ("--plot", args.plot)],
                           [("--data", args.data), ("--prior", args.prior)], no_clobber=args.no_clobber)
    from ..config import enable_compilation_cache
    from ..forecasting.planner import plan

    enable_compilation_cache()
    data, covariates = read_patients(args)
    result = plan(args.prior, data, args.option, cycle=args.cycle, transfuse=args.transfuse or (),
                  cycle_length=args.cycle_length, horizon=args.horizon, method=args.method, draws=args.draws,
                  seed=args.seed, covariates=covariates or None)
    print(result.text())
    for problem in result.forecast.check():
        print(f"warning: {problem}")
    if outputs:
        from ..io import atomic_paths

        suffixes = [".json" if out.option == "--json" else ".png" for out in outputs]
        with atomic_paths([out.path for out in outputs], suffixes, overwrite=not args.no_clobber) as tmps:
            for out, tmp in zip(outputs, tmps):
                if out.option == "--json":
                    result.to_json(tmp)
                else:
                    result.plot(tmp)
        for out in outputs:
            print(out.wrote())
    return 0
