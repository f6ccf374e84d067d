r"""Transfusion policies: expected transfusions when a threshold rule is followed.

The rule a ward follows, "transfuse ``units`` unit(s) of the product when the morning count
is below ``threshold``" (platelets below 10 ×10^9/L; haemoglobin below 7 g/dL), is
simulated on each posterior draw of a forecast: counts are checked every
``check_every_h`` hours from the start of the forecast cycle; at the first check below the
threshold the product is given (a dose into the model state the card names in its
``[[pd]] product``, :mod:`pkpd.model.card`), the course is solved again from the
beginning with that transfusion, and the next check continues from there, up to
``max_transfusions``. Every draw keeps its own transfusion times (the draws are solved
as separate subjects), so the number of transfusions has a posterior distribution:
:class:`PolicyResult` reports its mean (the expected number), ``P(>= 1)``, quantiles, the
transfusion days and the count trajectories under the policy.

The transfused amount is the card's ``unit_amount`` per unit (e.g. the count increment of
one adult platelet unit), the only link between "one unit" and the model state; the rule
is applied to the noise-free count (the model's prediction), not to a noisy measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import PkpdError
from ..stats.simulate import output_dvid, solve_design
from . import endpoints as ep

__all__ = ["PolicyResult", "transfusion_policy"]


@dataclass(frozen=True)
class PolicyResult:
    """Transfusions under a threshold rule, per patient and regimen of a forecast.

    Attributes
    ----------
    lineage, product : str
    threshold, units : float
    counts : numpy.ndarray, shape [draws, patients, regimens]
        Number of transfusions given on each draw.
    times_h : list of list of list of numpy.ndarray
        ``times_h[i][r][d]``: transfusion times (h) of draw ``d``.
    trajectories : numpy.ndarray, shape [draws, patients, regimens, T]
        Counts under the policy on :attr:`time_h`.
    time_h : numpy.ndarray
    ids, regimens : list
    """

    lineage: str
    product: str
    threshold: float
    units: float
    counts: np.ndarray
    times_h: list
    trajectories: np.ndarray
    time_h: np.ndarray
    ids: list
    regimens: list

    def table(self, interval: float = 0.9) -> pd.DataFrame:
        """Per patient x regimen: expected transfusions, P(>= 1), median and interval of the
        count, and the nadir under the policy (median)."""
        rows = []
        for i, pid in enumerate(self.ids):
            for r, name in enumerate(self.regimens):
                n = self.counts[:, i, r]
                s = ep.summarise(n, interval=interval, nan="omit")
                value, _ = ep.nadir(self.time_h, self.trajectories[:, i, r, :])
                rows.append({"id": pid, "regimen": name, "lineage": self.lineage, "rule":
                             f"{self.units:g} unit(s) of {self.product} when {self.lineage} < {self.threshold:g}",
                             "expected_transfusions": float(n.mean()), "p_any": float(np.mean(n >= 1)),
                             "median": s["median"], "lo": s["lo"], "hi": s["hi"],
                             "nadir_median": float(np.nanmedian(value))})
        return pd.DataFrame(rows)


def _product(model, lineage):
    """``(product name, CMT)`` of the card's blood product for ``lineage``.

    The blood product (``unit_amount``) whose card ``output`` is ``lineage``; else the
    single blood product without ``output`` of the component that outputs ``lineage``.
    """
    system = model.dynamics
    sources = {src for name, src, _ in system.outputs if name == lineage}
    specs = model.card.pds if model.card.schema == 2 else ()
    blood = [(spec, q) for spec in specs for q in spec.products if q.unit_amount]
    named = [(spec, q) for spec, q in blood if q.output == lineage]
    if not named:
        named = [(spec, q) for spec, q in blood if q.output is None and spec.name in sources]
    if len(named) == 1:
        spec, q = named[0]
        return q.name, int(spec.cmt[q.target])
    if named:
        raise PkpdError(f"model {model.name!r} defines no transfusion product for {lineage} that is unambiguous: "
                        f"{', '.join(q.name for _, q in named)} all serve it (give each [[pd]] product an output)")
    raise PkpdError(f"model {model.name!r} defines no transfusion product for {lineage} (a [[pd]] product with "
                    "unit_amount routed to the state that outputs it, or one whose output is it)")


def transfusion_policy(forecast, lineage, threshold, units=1.0, *, check_every_h=24.0, max_transfusions=8,
                       step_h=6.0) -> PolicyResult:
    """Simulate "give ``units`` of the product when ``lineage`` < ``threshold`` at a check"
    on every posterior draw of ``forecast`` (module docstring).

    Parameters
    ----------
    forecast : Forecast
        Its posterior draws, patients, regimens and cycle starts are used.
    lineage : str
        ``"PLT"`` or ``"HGB"`` (any output whose component has a card ``product``).
    threshold, units : float
        The rule; ``units`` of the product per transfusion.
    check_every_h : float
        Interval of the checks, from the cycle start of each regimen (default daily).
    max_transfusions : int
        Upper limit per draw (the loop stops earlier when no draw needs another).
    step_h : float
        Spacing of the returned trajectories (h).

    Raises
    ------
    PkpdError
        The model has no product for ``lineage``, or bad arguments.
    """
    ctx = forecast._context
    model, ds = ctx["model"], ctx["dataset"]
    if lineage not in model.outputs:
        raise PkpdError(f"model {model.name!r} does not output {lineage!r} (outputs {list(model.outputs)})")
    if not threshold > 0 or not units > 0 or not check_every_h > 0 or int(max_transfusions) < 1:
        raise PkpdError("threshold, units and check_every_h must be > 0 and max_transfusions >= 1")
    product, cmt = _product(model, lineage)
    from .forecast import _design

    frames, _, after, _, dose_units = _design(model, ds, ctx["regimen_items"])
    dose_units = {**dose_units, cmt: "unit"}
    grid = np.arange(0.0, forecast.time_h[-1] + 1e-9, float(step_h))
    dvid = output_dvid(model)[lineage]
    theta = ctx["theta"]
    n_draws = next(iter(theta.values())).shape[1]
    n_real = len(forecast.ids)
    names = ctx["regimen_items"]
    counts = np.zeros((n_draws, n_real, len(names)), dtype=int)
    trajectories = np.full((n_draws, n_real, len(names), grid.size), np.nan)
    times_h = [[None] * len(names) for _ in range(n_real)]
    for i in range(n_real):
        th = {k: np.asarray(v[i], dtype=float) for k, v in theta.items()}
        for r in range(len(names)):
            base = frames[r * n_real + i]
            checks = np.arange(after[i, r], grid[-1] + 1e-9, float(check_every_h))
            given = [[] for _ in range(n_draws)]
            for _ in range(int(max_transfusions) + 1):
                y = _solve(model, base, th, given, grid, dvid, cmt, units, dose_units, ctx["solver"], product)
                at_checks = ep._sample(grid, y, checks)
                added = False
                for d in range(n_draws):
                    if len(given[d]) >= int(max_transfusions):
                        continue
                    last = given[d][-1] if given[d] else -np.inf
                    low = np.flatnonzero((checks > last) & (at_checks[d] < threshold))
                    if low.size:
                        given[d].append(float(checks[low[0]]))
                        added = True
                if not added:
                    break
            trajectories[:, i, r, :] = y
            counts[:, i, r] = [len(g) for g in given]
            times_h[i][r] = [np.asarray(g) for g in given]
    return PolicyResult(lineage=lineage, product=product, threshold=float(threshold), units=float(units),
                        counts=counts, times_h=times_h, trajectories=trajectories, time_h=grid,
                        ids=list(forecast.ids), regimens=list(forecast.regimens))


def _solve(model, base, theta, given, grid, dvid, cmt, units, dose_units, solver, product):
    """Counts ``[draws, T]`` of one patient x regimen, draw ``d`` with transfusions at ``given[d]``."""
    template = {"DV": np.nan, "AMT": 0.0, "EVID": 0, "MDV": 0, "CMT": 0, "RATE": 0.0, "II": 0.0, "ADDL": 0,
                "SS": 0, "DVID": dvid}
    skip = set(template) | {"ID", "TIME", "DRUG", "LINE", "LLOQ", "CENS"}
    first = base.iloc[0]
    covariates = {c: first[c] for c in base.columns if c not in skip}
    doses = base[base["EVID"].isin([1, 4])]
    obs = pd.DataFrame([{**template, **covariates, "TIME": t} for t in grid])
    frames = []
    for d, times in enumerate(given):
        parts = [obs.assign(_k=0), doses.assign(_k=1)]
        if times:
            parts.append(pd.DataFrame([{**template, **covariates, "TIME": t, "AMT": float(units), "EVID": 1,
                                        "MDV": 1, "CMT": cmt, "DVID": 0, "DRUG": product, "_k": 1} for t in times]))
        both = pd.concat(parts, ignore_index=True).sort_values(["TIME", "_k"], kind="stable").drop(columns="_k")
        both["ID"] = d + 1
        frames.append(both)
    df = pd.concat(frames, ignore_index=True)
    ipred, _, _ = solve_design(model, df, theta, solver, dose_units)
    rows = df["EVID"].to_numpy() == 0
    return ipred[rows].reshape(len(given), grid.size)
