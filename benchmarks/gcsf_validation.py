"""G-CSF validation: the filgrastim / pegfilgrastim cards against real data and trial-level anchors.

    python benchmarks/gcsf_validation.py [--subjects 500] [--patients 1000] [--seed 1]

(a) Healthy volunteers, van der Auwera 2001 (real digitised group means after a single SC
    filgrastim dose of 5 or 10 ug/kg; ``$PKPD_EXTERNAL/auwera-gcsf``, MODELS.md-independent):
    the typical-value predictions of ``melhem2018_filgrastim`` (and, for comparison, the
    unverified ``krzyzanski2010_filgrastim``) for the G-CSF Cmax and the ANC peak, their
    predicted/observed ratios, and the 5-95% range of ``--subjects`` virtual subjects drawn
    from the card's IIV (70 kg); "inside" says whether the observed mean lies in that range.
(b) Trial-level check (MODELS.md 6.4): ``--patients`` virtual patients, docetaxel
    100 mg/m2 (BSA 1.8 m2, 1-h infusion, 70 kg) with ``kloft2006_docetaxel_filgrastim``:
    no G-CSF, filgrastim 5 ug/kg days 2-11, pegfilgrastim 6 mg day 2 (the card's
    pegfilgrastim PK = ``roskos2006_pegfilgrastim``, assumed values). Cycle-1 duration of
    grade-4 neutropenia (ANC < 0.5 x 10^9/L, hourly grid, 21 days), beside the published
    ranges (Green 2003: mean 1.6 d filgrastim / 1.8 d pegfilgrastim, doxorubicin 60 +
    docetaxel 75 mg/m2; Crawford 1991: median 6 d placebo vs 1 d G-CSF, CAE in SCLC).
    Reported, not tuned.

Uses pkpd's own API (``pkpd.load_model``, ``Model.prepare``, ``Model.individual_parameters``,
``pkpd.solve.solver.predict_outputs``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def design(doses, times, cov, n=1):
    """NONMEM rows: doses (time h, mg, rate mg/h, cmt, addl, ii), ANC observations at ``times``."""
    import pandas as pd

    one = [dict(TIME=t, DV=np.nan, AMT=a, RATE=r, EVID=1, MDV=1, CMT=c, II=ii, ADDL=k, SS=0, DVID=0)
           for t, a, r, c, k, ii in doses]
    one += [dict(TIME=t, DV=np.nan, AMT=0.0, RATE=0.0, EVID=0, MDV=0, CMT=0, II=0.0, ADDL=0, SS=0, DVID=2)
            for t in times]
    base = pd.DataFrame(one).sort_values(["TIME", "EVID"], kind="stable")
    df = pd.concat([base.assign(ID=i + 1) for i in range(n)], ignore_index=True)
    for k, v in cov.items():
        df[k] = v
    return df


def predict(model, df, n, eta=None, batch=250):
    """Outputs ``{name: [n, T]}`` for ``n`` copies of one design, individual parameters from ``eta``."""
    import jax
    import jax.numpy as jnp

    from pkpd.dosing.events import evaluation_keys
    from pkpd.solve.solver import predict_outputs

    one = df[df["ID"] == 1]
    size = min(batch, n)
    block = df[df["ID"] <= size]
    ids = list(range(1, size + 1))
    dynamics, data = model.prepare(block, ids, n_subjects=size)
    rows = np.flatnonzero(block["EVID"].to_numpy() == 0)
    t, order, _, mask = evaluation_keys(block, rows, ids, n_subjects=size)
    n_obs = int(np.asarray(mask)[0].sum())
    cov = model.subject_covariates(one, [1])
    cov = {k: np.full(n, v[0]) for k, v in cov.items()}
    theta = model.individual_parameters(cov, eta or {}, n=n)
    outs, failed = {}, 0
    for start in range(0, n, size):
        idx = np.arange(start, min(start + size, n))
        th = {k: jnp.asarray(np.resize(np.asarray(v, float)[idx], size)) for k, v in theta.items()}
        out, ok, _ = predict_outputs(dynamics, data, th, jnp.asarray(t), jnp.asarray(order))
        jax.block_until_ready(out)
        failed += int((~np.asarray(ok)[: len(idx)]).sum())
        for k, v in out.items():
            outs.setdefault(k, []).append(np.asarray(v)[: len(idx), :n_obs])
    return {k: np.concatenate(v) for k, v in outs.items()}, np.asarray(t)[0, :n_obs], failed


def draw_eta(model, n, rng):
    return {k: rng.normal(0.0, s.omega, n) for k, s in model.parameters.items() if s.omega > 0 and not s.column}


def healthy_volunteers(n_sub, rng, external):
    import pandas as pd

    import pkpd

    path = external / "auwera-gcsf" / "auwera.csv"
    if not path.is_file():
        print(f"(a) skipped: {path} not found (set PKPD_EXTERNAL)")
        return
    raw = pd.read_csv(path)
    times = np.arange(0.0, 72.0 + 1e-9, 0.25)
    print("\n(a) Healthy volunteers, single SC filgrastim, van der Auwera 2001 (real means, digitised); 70 kg")
    print(f"{'card':<26} {'dose':>7} {'quantity':<14} {'observed':>9} {'typical':>9} {'ratio':>6} "
          f"{'t_obs h':>7} {'t_pred h':>8} {'5%':>8} {'95%':>8} {'inside':>6}")
    for name in ("melhem2018_filgrastim", "krzyzanski2010_filgrastim"):
        model = pkpd.load_model(ROOT / "models" / f"{name}.toml")
        for dose in (5, 10):
            df = design([(0.0, dose * 70e-3, 0.0, 1, 0, 0.0)], times, {"WT": 70.0}, n=n_sub)
            typ, t, _ = predict(model, df[df["ID"] == 1], 1)
            pop, _, failed = predict(model, df, n_sub, draw_eta(model, n_sub, rng))
            for label, key, col, scale in (("G-CSF Cmax", "GCSF", f"gcsf{dose}", 1.0),
                                           ("ANC peak", "ANC", f"anc{dose}", 1e-3)):
                obs = raw[["hours", col]].dropna()
                i = int(np.argmax(obs[col].to_numpy()))
                o_val, o_t = obs[col].to_numpy()[i] * scale, obs["hours"].to_numpy()[i]
                p_val = typ[key][0].max()
                p_t = t[int(np.argmax(typ[key][0]))]
                lo, hi = np.quantile(pop[key].max(axis=1), [0.05, 0.95])
                unit = "ng/mL" if key == "GCSF" else "10^9/L"
                print(f"{name:<26} {dose:>4} ug/kg {label:<14} {o_val:>9.3g} {p_val:>9.3g} {p_val / o_val:>6.2f} "
                      f"{o_t:>7.0f} {p_t:>8.1f} {lo:>8.3g} {hi:>8.3g} {'yes' if lo <= o_val <= hi else 'no':>6}"
                      f"  ({unit}{'; failed solves ' + str(failed) if failed else ''})")
    print("    observed peaks are the maxima of the digitised means (G-CSF at 0,1,3,6,12,24,36,48 h; ANC at 0,3,6,12,"
          "24,36,48,72 h); the population range is of individual peaks, wider than that of a group mean")


def trial(n_pat, rng):
    import pkpd

    model = pkpd.load_model(ROOT / "models" / "kloft2006_docetaxel_filgrastim.toml")
    times = np.arange(0.0, 21 * 24 + 1e-9, 1.0)
    doc = (0.0, 180.0, 180.0, 1, 0, 0.0)  # 100 mg/m2 x 1.8 m2, 1-h infusion
    arms = {
        "no G-CSF": [doc],
        "filgrastim 5 ug/kg d2-11": [doc, (24.0, 0.35, 0.0, 2, 9, 24.0)],
        "pegfilgrastim 6 mg d2": [doc, (24.0, 6.0, 0.0, 3, 0, 0.0)],
    }
    eta = draw_eta(model, n_pat, rng)  # the same virtual patients in every arm
    print(f"\n(b) Docetaxel 100 mg/m2 (180 mg, 1 h), {n_pat} virtual patients (kloft2006_docetaxel_filgrastim, "
          "IIV of the card, 70 kg); cycle 1, hourly grid")
    print(f"{'arm':<26} {'mean DSN d':>10} {'median DSN d':>12} {'P(grade 4)':>10} {'median nadir':>12} "
          f"{'median day nadir':>16} {'median ANC peak':>15} {'failed':>6} {'s':>6}")
    for arm, doses in arms.items():
        start = time.perf_counter()
        out, t, failed = predict(model, design(doses, times, {"WT": 70.0}, n=n_pat), n_pat, eta)
        anc = out["ANC"]
        dsn = (anc < 0.5).sum(axis=1) * (t[1] - t[0]) / 24.0
        nadir = anc.min(axis=1)
        print(f"{arm:<26} {dsn.mean():>10.2f} {np.median(dsn):>12.2f} {np.mean(dsn > 0):>10.3f} "
              f"{np.median(nadir):>12.3f} {np.median(t[np.argmin(anc, axis=1)]) / 24:>16.1f} "
              f"{np.median(anc.max(axis=1)):>15.2f} {failed:>6} {time.perf_counter() - start:>6.1f}")
    print("    published: Green 2003 (doxorubicin 60 + docetaxel 75 mg/m2) mean DSN cycle 1: 1.6 d filgrastim, "
          "1.8 d pegfilgrastim;\n    Crawford 1991 (CAE, SCLC) median duration of grade-4 neutropenia 6 d placebo vs "
          "1 d G-CSF (MODELS.md 6.4 [T])")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=500, help="virtual healthy volunteers per dose (a)")
    parser.add_argument("--patients", type=int, default=1000, help="virtual patients per arm (b)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import jax

    import pkpd

    pkpd.enable_x64()
    external = Path(os.environ.get("PKPD_EXTERNAL", ROOT.parent / "shared" / "external"))
    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, device {jax.devices()[0].device_kind}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, "
          f"seed {args.seed}")
    rng = np.random.default_rng(args.seed)
    healthy_volunteers(args.subjects, rng, external)
    trial(args.patients, rng)


if __name__ == "__main__":
    main()
