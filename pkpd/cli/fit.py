"""``pkpd fit DATA --model CARD``: population fit (NUTS, SVI or MAP); prints the summary, writes the fit."""

from __future__ import annotations

from ._common import add_data_options, read_data
from ._outputs import add_output_options, plan_outputs
from ..errors import PkpdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a population model to a data set (NUTS, SVI or MAP)",
        description="Fit a model card's hierarchical model to a NONMEM-style data set and write the fit "
        "(ArviZ InferenceData, netCDF) atomically.",
    )
    p.add_argument("data", help="NONMEM-style CSV")
    p.add_argument("--model", required=True, help="model card name or path (see `pkpd models`)")
    p.add_argument("--method", default="nuts", choices=["nuts", "chees", "svi", "map", "laplace"],
                   help="nuts (default); chees: many short chains of ChEES-HMC vectorised together (for a GPU; "
                   "needs pip install 'pkpd[chees]'); svi, map, laplace: fast approximations")
    p.add_argument("--chains", type=int, default=None, help="chains (default 4 for nuts, 64 for chees)")
    p.add_argument("--superchains", type=int, default=8,
                   help="chees: groups of chains sharing a start, for the nested R-hat")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--max-tree-depth", type=int, default=10)
    p.add_argument("--covariance", choices=["diag", "full"], default="diag", help="IIV covariance")
    p.add_argument("--parameterisation", choices=["noncentred", "centred"], default="noncentred",
                   help="random effects sampled standardised (non-centred) or as individual log parameters")
    p.add_argument("--centre", help="partial centring: these IIV parameters centred, the others non-centred given "
                   "them, e.g. CL,V1,KA (well identified ones centred, weakly identified ones not)")
    p.add_argument("--init", choices=["prior", "svi"], default="prior",
                   help="NUTS starting point: the prior values, or a quick SVI fit (median; variances as mass)")
    p.add_argument("--prior-width", type=float, default=0.5, help="SD of the log-normal priors on typical values")
    p.add_argument("--fix", help="parameters to hold at the card's values, e.g. gamma,MTT")
    p.add_argument("--iiv", help="parameters with estimated IIV, e.g. Circ0,slope, or 'none' for a fixed-effects "
                   "fit (needed by --method laplace); default: those of the card")
    p.add_argument("--censoring", choices=["M3", "M4", "drop"], default="M3")
    p.add_argument("--guide", choices=["normal", "mvn", "lowrank"], default="normal", help="SVI guide")
    p.add_argument("--steps", type=int, default=20000, help="SVI/MAP optimisation steps (upper bound)")
    p.add_argument("--draws", type=int, default=1000, help="SVI/Laplace: draws from the approximation stored")
    p.add_argument("--psis", choices=["diagnose", "resample", "off"], default="diagnose",
                   help="SVI/Laplace: Pareto-smoothed importance sampling check of the approximation (Pareto k "
                   "printed; > 0.7: unreliable, intervals may be too narrow); 'resample' also importance-"
                   "resamples the stored draws")
    p.add_argument("--solver", choices=["auto", "tsit5", "rk4-grid"], default="auto",
                   help="ODE solver of the likelihood: 'auto' (default) the card's adaptive integrator (implicit "
                   "Kvaerno5 for the stiff G-CSF feedback cards, else Tsit5; rtol 1e-6), 'tsit5' Tsit5 whatever the "
                   "card says, or the fixed-grid RK4 (checked against a tight solve and refined at set-up; faster "
                   "for oral dosing)")
    p.add_argument("--out", required=True, help="output netCDF file (written atomically)")
    p.add_argument("--no-progress", action="store_true")
    add_output_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def pareto_k_line(settings: dict) -> str:
    """One line on the PSIS check of an SVI/Laplace fit: Pareto k, its reading, the ESS."""
    k = float(settings["pareto_k"])
    verdict = ("good (< 0.5)" if k < 0.5 else "rough (0.5-0.7): intervals may be somewhat too narrow" if k <= 0.7
               else "UNRELIABLE (> 0.7): intervals may be too narrow; use --method nuts")
    what = "Laplace" if settings.get("method") == "laplace" else f"SVI guide {settings.get('guide')!r}"
    resampled = "; draws importance-resampled" if settings.get("psis") == "resample" else ""
    return (f"PSIS check of the {what} approximation: Pareto k = {k:.2f}, {verdict}; importance-sampling ESS "
            f"{float(settings.get('psis_ess', float('nan'))):.0f} of {settings.get('svi_draws')} draws{resampled}")


def run(args) -> int:
    for name in ("chains", "warmup", "samples", "steps", "draws", "superchains"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PkpdError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not str(args.out).endswith(".nc"):
        raise PkpdError(f"--out should be a .nc (netCDF) file, got {args.out!r}")
    (out,) = plan_outputs("fit", [("--out", args.out)], [("DATA", args.data), ("--model", args.model)],
                          no_clobber=args.no_clobber)
    import warnings

    import pandas as pd

    from ..config import enable_compilation_cache
    from ..infer.fit import fit

    enable_compilation_cache()
    dataset = read_data(args)
    from ..solve.solver import SolverOptions

    fixed = tuple(x.strip() for x in (args.fix or "").split(",") if x.strip())
    iiv = {}
    if args.iiv is not None:
        iiv["iiv"] = () if args.iiv.strip().lower() == "none" else tuple(
            x.strip() for x in args.iiv.split(",") if x.strip())
    solver = (SolverOptions(solver="rk4-grid") if args.solver == "rk4-grid"
              else SolverOptions(solver=args.solver, rtol=1e-6, atol=1e-8))
    parameterisation = args.parameterisation
    if args.centre is not None:
        if args.parameterisation != "noncentred":
            raise PkpdError("--centre (partial centring) and --parameterisation centred exclude each other")
        parameterisation = tuple(x.strip() for x in args.centre.split(",") if x.strip())
        if not parameterisation:
            raise PkpdError("--centre: expected IIV parameter names, e.g. CL,V1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(args.model, dataset, method=args.method, chains=args.chains, superchains=args.superchains,
                     warmup=args.warmup,
                     samples=args.samples, seed=args.seed, target_accept=args.target_accept,
                     max_tree_depth=args.max_tree_depth, guide=args.guide, svi_steps=args.steps, init=args.init,
                     psis=args.psis, svi_draws=args.draws,
                     parameterisation=parameterisation,
                     progress=not args.no_progress, covariance=args.covariance, prior_width=args.prior_width,
                     fixed=fixed, censoring=args.censoring, solver=solver, **iiv)
    from ..io import atomic_path

    with atomic_path(out.path, ".nc", overwrite=not args.no_clobber) as tmp:
        result.save(tmp)
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        print(result.summary().to_string(float_format=lambda x: f"{x:.4g}"))
    s = result.settings
    print(f"\n{result!r}; wall time {s['wall_time_s']:.1f} s; {out.wrote()}")
    if "pareto_k" in s:
        print(pareto_k_line(s))
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}")
    return 0
