"""Joint fit of ANC, PLT and HGB: a shared progenitor pool or three separate lineages? (whole-marrow issue)

Two cards describe the same typical patient (carboplatin 800 mg 1 h q21d):

* ``fornari2019_carboplatin_marrow``: one multipotent progenitor pool feeds all three lineages, so
  the drug's damage to it is shared (the shared-pool model);
* ``carboplatin_lineages_separate``: a Friberg chain for neutrophils, one for platelets and a
  red-cell lifespan model, sharing only the drug concentration; their typical values were
  fitted to the Fornari card's typical patient (``--derive``).

For each truth (each card in turn, IIV and residual error of the card) a study of ``--patients``
patients with ANC, PLT and HGB on the days of ``SCHEDULE`` over ``--cycles`` cycles is simulated,
and both cards are fitted to it jointly by NUTS with the same free parameters (three baselines and
three drug sensitivities, each with IIV, and their full 6 x 6 IIV correlation matrix: the
random effects of the three lineages are correlated; residual SDs of the three outputs). The
two fits are compared by PSIS-LOO (``arviz.compare``): the expected log predictive density per
study, its difference and the standard error of the difference, and the Pareto k of each fit.
The shared pool is identifiable from such data when LOO prefers the true card by more than
about two standard errors of the difference.

Run: ``python benchmarks/marrow_joint_fit.py [--patients 12 --cycles 2 --chains 2 --warmup 300 --samples 300]``;
``--derive`` reprints the separate card's typical values. Figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pkpd

CARDS = {"shared pool": "fornari2019_carboplatin_marrow", "separate": "carboplatin_lineages_separate"}
REGIMEN = "carboplatin 800 mg 1h q21d x{cycles}"
SCHEDULE = (0, 4, 7, 10, 14, 17, 21)  # days of each cycle with ANC, PLT and HGB
#: Free parameters of each card: three baselines, three drug sensitivities (all with IIV).
FREE = {
    "fornari2019_carboplatin_marrow": ("Neut0", "Plt0", "RBC0", "Slope_MPP", "Slope_CMP", "Slope_MEP"),
    "carboplatin_lineages_separate": ("Circ0", "PLT0", "Hb0", "slope", "slope_PLT", "slope_HGB"),
}


def study(card: str, patients: int, cycles: int, seed: int):
    """A simulated study of ``card`` (IIV, residual error): a Dataset."""
    times = sorted({24.0 * (21 * c + d) for c in range(cycles) for d in SCHEDULE} | {24.0 * 21 * cycles})
    df = pkpd.simulate(card, REGIMEN.format(cycles=cycles), patients, seed=seed, times=np.asarray(times))
    return pkpd.read_dataset(df.drop(columns=["IPRED", "DRUG"], errors="ignore"))


def fit(card: str, data, chains: int, warmup: int, samples: int, seed: int):
    model = pkpd.load_model(card)
    free = FREE[card]
    fixed = tuple(p for p in model.parameter_names if p not in free)
    start = time.perf_counter()
    result = pkpd.fit(model, data, "nuts", chains=chains, warmup=warmup, samples=samples, seed=seed,
                      fixed=fixed, iiv=free, covariance="full", init="svi", progress=False)
    return result, time.perf_counter() - start


def derive():
    """Least-squares fit of the separate card's typical patient to the Fornari card's (log scale)."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import least_squares

    from pkpd.solve.solver import SolverOptions, predict_outputs, prepare_subjects

    fornari, separate = (pkpd.load_model(CARDS[k]) for k in ("shared pool", "separate"))
    times = np.arange(0.0, 42 * 24 + 1, 12.0)
    df = pkpd.simulate(fornari, REGIMEN.format(cycles=2), 1, iiv=False, residual=False, times=times)
    base = df.drop(columns=["IPRED", "DRUG"])
    obs = base["EVID"].to_numpy() == 0
    y = np.log(df["DV"].to_numpy()[obs])
    dvid = base["DVID"].to_numpy()[obs]
    sd = np.select([dvid == 2, dvid == 3], [0.3, 0.25], 0.06)  # the cards' residual SDs (log scale)
    name = {2: "ANC", 3: "PLT", 4: "HGB"}
    data = prepare_subjects(separate.dynamics, base)
    t = jnp.asarray(base["TIME"].to_numpy()[obs][None, :])
    typical = {k: float(v) for k, v in separate.card.typical_values().items()}
    names = ("MTT", "gamma", "slope", "ktr", "gamma_PLT", "slope_PLT", "gamma_HGB", "slope_HGB")

    @jax.jit
    def predict(log_values):
        theta = {k: jnp.asarray([v]) for k, v in typical.items()}
        theta.update({n: jnp.exp(v)[None] for n, v in zip(names, log_values)})
        return predict_outputs(separate.dynamics, data, theta, t, jnp.full_like(t, jnp.inf),
                               SolverOptions(rtol=1e-8, atol=1e-10))[0]

    def residuals(x):
        out = predict(jnp.asarray(x))
        p = np.array([float(out[name[d]][0, i]) for i, d in enumerate(dvid)])
        return (np.log(p) - y) / sd

    res = least_squares(residuals, np.log([typical[n] for n in names]), diff_step=1e-4)
    print(f"least squares: cost {res.cost:.3f} (status {res.status})")
    for n, v in zip(names, np.exp(res.x)):
        print(f"{n} = {v:.4g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--truth", choices=["both", *CARDS], default="both")
    ap.add_argument("--derive", action="store_true")
    args = ap.parse_args()
    pkpd.enable_x64()
    if args.derive:
        derive()
        return
    import arviz as az

    truths = list(CARDS) if args.truth == "both" else [args.truth]
    for truth in truths:
        data = study(CARDS[truth], args.patients, args.cycles, args.seed)
        fits = {}
        for label, card in CARDS.items():
            result, elapsed = fit(card, data, args.chains, args.warmup, args.samples, args.seed)
            d = result.diagnostics()
            print(f"truth {truth!r}: fit {label!r} {elapsed:.0f} s, divergences {d['divergences']}, "
                  f"max R-hat {d['max_r_hat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}", flush=True)
            fits[label] = result.idata
            iiv = list(result.problem.iiv)
            if "corr" in result.idata.posterior:
                corr = result.idata.posterior["corr"].median(("chain", "draw")).values
                slopes = [iiv.index(p) for p in FREE[card][3:]]
                pairs = ", ".join(f"{iiv[i]}~{iiv[j]} {corr[i, j]:+.2f}" for a, i in enumerate(slopes)
                                  for j in slopes[a + 1:])
                print(f"  IIV correlations between the lineages' drug sensitivities (posterior medians): {pairs}")
        table = az.compare(fits, ic="loo")
        print(f"\ntruth: {truth} ({args.patients} patients, {args.cycles} cycles, "
              f"{data.df['EVID'].eq(0).sum()} observations)")
        print(table[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight", "warning"]].round(2).to_string())
        for label, idata in fits.items():
            k = az.loo(idata, pointwise=True).pareto_k.values
            print(f"  {label}: Pareto k > 0.7 for {int((k > 0.7).sum())} of {k.size} observations")
        print(flush=True)


if __name__ == "__main__":
    main()
