"""``pkpd report FIT.nc --out DIR``: HTML report of a population fit (diagnostics, goodness of fit, VPC)."""

from __future__ import annotations

from pathlib import Path

from ._common import add_data_options, read_data
from ._outputs import add_output_options, plan_folder
from ..errors import PkpdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report of a fit: parameters, diagnostics, goodness of fit, VPC, individual fits",
        description="Write OUT/index.html (and its PNG figures) for a saved population fit: parameter table "
        "with shrinkage, ESS and R-hat, sampler diagnostics, goodness-of-fit plots with NPDE and LOO-PIT, "
        "visual predictive checks and individual fits. The fit file does not hold its data: --data names "
        "the data set it was fitted to (default: the shipped example data, as `pkpd demo` uses).",
    )
    p.add_argument("fit", metavar="FIT.nc", help="a fit saved by `pkpd fit` or `pkpd demo`")
    p.add_argument("--out", required=True, help="output folder (created; index.html and PNGs)")
    p.add_argument("--data", help="the data set the fit was made from (default: the shipped example data)")
    p.add_argument("--draws", type=int, default=200, help="posterior draws simulated (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulations (default 0)")
    p.add_argument("--bins", type=int, default=8, help="VPC time bins (quantiles; default 8)")
    p.add_argument("--bin-edges", help="explicit VPC bin edges in hours, e.g. 0,24,96,168,336,504")
    p.add_argument("--stratify", help="stratify the VPCs by a subject-level column (e.g. SEX) or DOSE")
    p.add_argument("--no-pcvpc", action="store_true", help="leave out the prediction-corrected VPCs")
    p.add_argument("--per-page", type=int, default=12, help="subjects per page of individual fits (default 12)")
    add_output_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def _edges(text):
    if not text:
        return None
    try:
        edges = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PkpdError(f"--bin-edges must be numbers separated by commas, got {text!r}") from None
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise PkpdError(f"--bin-edges must be at least two increasing numbers, got {text!r}")
    return edges


def run(args) -> int:
    from ._common import example_data

    for name in ("draws", "bins", "per_page"):
        if getattr(args, name) < 1:
            raise PkpdError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    edges = _edges(args.bin_edges)
    fit_path = Path(args.fit)
    if not fit_path.is_file():
        raise PkpdError(f"fit file {str(fit_path)!r} does not exist")
    data_path = Path(args.data) if args.data else example_data()
    (out,) = plan_folder("report", "--out", args.out, ["index.html"], [("FIT", fit_path), ("--data", data_path)],
                         no_clobber=args.no_clobber)
    import time

    from ..config import enable_compilation_cache
    from ..infer.fit import load_fit
    from ..reporting.report import report_fit

    enable_compilation_cache()
    start = time.perf_counter()
    fit = load_fit(fit_path)
    data = read_data(args, data_path)
    report_fit(fit, args.out, data=data, draws=args.draws, seed=args.seed, n_bins=args.bins, bins=edges,
               pcvpc=not args.no_pcvpc, stratify=args.stratify, per_page=args.per_page,
               overwrite=not args.no_clobber)
    n_png = len(list(Path(args.out).glob("*.png")))
    print(f"{out.wrote()} ({n_png} figures beside it; {time.perf_counter() - start:.1f} s)")
    return 0
