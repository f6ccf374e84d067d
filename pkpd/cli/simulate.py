"""``pkpd simulate MODEL --regimen ...``: virtual patients from a model card, as NONMEM CSV."""

from __future__ import annotations

import numpy as np

from ._common import parse_values
from ._outputs import add_output_options, plan_outputs
from ..errors import PkpdError


def _times(text: str | None):
    """``"0:504:24"`` (start:stop:step, hours, stop included) or ``"0,24,48"``."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            return np.arange(start, stop + step * 1e-9, step)
        return np.array(sorted(float(x) for x in text.split(",")))
    except ValueError:
        raise PkpdError(f"--times: expected START:STOP:STEP or a comma-separated list of hours, got {text!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate virtual patients from a model card",
        description="Draw individual parameters from a model card's IIV, solve the model and add residual "
        "error; writes a NONMEM-style CSV that `pkpd check` accepts.",
    )
    p.add_argument("model", help="model card name (see `pkpd models`) or path")
    p.add_argument("--regimen", required=True, help='e.g. "100 mg/m2 1h q21d x4"')
    p.add_argument("--n", type=int, default=1, help="number of patients (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--times", help="observation times in hours, START:STOP:STEP or a list "
                   "(default: daily to 21 days after the last dose)")
    p.add_argument("--covariates", help="covariate values for every patient, e.g. BSA=1.8,SEX=1,AAG=1.34")
    p.add_argument("--no-iiv", action="store_true", help="typical parameters for everybody")
    p.add_argument("--no-residual", action="store_true", help="noise-free observations")
    p.add_argument("--out", required=True, help="output CSV (written atomically)")
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.n < 1:
        raise PkpdError(f"--n must be >= 1, got {args.n}")
    (out,) = plan_outputs("simulate", [("--out", args.out)], [("MODEL", args.model)], no_clobber=args.no_clobber)
    times = _times(args.times)
    covariates = parse_values(args.covariates, "--covariates")
    from ..io import atomic_path
    from ..stats.simulate import simulate

    sim = simulate(
        args.model, args.regimen, n_subjects=args.n, seed=args.seed, times=times,
        covariates=covariates, iiv=not args.no_iiv, residual=not args.no_residual,
    )
    with atomic_path(out.path, ".csv", overwrite=not args.no_clobber) as tmp:
        sim.to_csv(tmp, index=False, na_rep=".")
    n_obs = int((sim["EVID"] == 0).sum())
    print(f"{out.wrote()}: {args.n} subjects, {n_obs} observations (model {args.model}, seed {args.seed})")
    return 0
