"""Dose recommendation for the next cycle: the largest dose with an acceptable risk of grade-4 toxicity.

One posterior (:func:`pkpd.forecasting.forecast.forecast`) is projected under every candidate dose,
so the risks of different doses are compared on the same draws; with the linear or
Emax drug effects of the cards the risk is then non-decreasing in the dose, draw by draw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import endpoints as ep
from ..errors import PkpdError
from .forecast import forecast, parse_horizon
from .lineage import get_lineage

__all__ = ["recommend_dose"]


def _risk(fc, grade: int, lineage: str) -> np.ndarray:
    """``P(grade >= grade)`` of the nadir in the forecast cycle, ``[patients, regimens]``."""
    out = np.zeros((len(fc.ids), len(fc.regimens)))
    trajectories = fc.lineage_trajectories[lineage]
    for i in range(len(fc.ids)):
        for r in range(len(fc.regimens)):
            y = trajectories[:, i, r, :]
            y = y[np.all(np.isfinite(y), axis=1)]
            vmin, _ = ep.nadir(fc.time_h, y, after=float(fc.after[i, r]))
            out[i, r] = float(np.mean(ep.ctcae_grade(vmin, lineage) >= grade))
    return out


def _limits(target, lineage, grade) -> list[tuple[str, int, float]]:
    """``[(lineage, grade, target)]`` from ``recommend_dose``'s ``target``/``lineage``/``grade``."""
    items = target.items() if isinstance(target, dict) else [((lineage, grade), target)]
    limits = []
    for key, t in items:
        lin, g = key if isinstance(key, tuple) else (key, None)
        spec = get_lineage(lin)
        g = min(int(grade), spec.max_grade) if g is None else int(g)
        if g not in spec.grades:
            raise PkpdError(f"grade {g!r} of {spec.name} is not assigned from a value (grades {sorted(spec.grades)})")
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = float("nan")
        if not 0 <= t <= 1:
            raise PkpdError(f"target must be a probability in [0, 1], got {t!r} for {spec.name}")
        limits.append((spec.name, g, t))
    if not limits:
        raise PkpdError("target: give at least one limit")
    return limits


def _regimen(dose: float, unit: str, duration: str, start: float) -> str:
    return f"{dose:g} {unit} {duration} @{start:g}h"


def recommend_dose(prior, patient, *, candidates=None, dose_range=None, unit="mg/m2", duration="1h", start=None,
                   target=0.2, lineage="ANC", grade=4, method="laplace", tol=None, return_forecast=False,
                   **forecast_kwargs):
    """Largest next-cycle dose with ``P(grade >= grade) <= target``.

    Parameters
    ----------
    prior, patient
        As for :func:`pkpd.forecasting.forecast.forecast` (several patients: each gets its own
        recommendation).
    candidates : sequence of float, optional
        Doses (in ``unit``) to compare, e.g. ``[60, 75, 85, 100]``.
    dose_range : (float, float), optional
        Continuous search instead: bisection on the (monotone) risk between the bounds,
        down to ``tol`` (default 1% of the range).
    unit, duration : str
        Dose unit and infusion duration of the regimen (``"<dose> <unit> <duration> @<start>h"``).
    start : float or str, optional
        Start of the next cycle (h, or ``"21d"``); default: the last dose in the data + 21 d
        (the latest over the patients).
    target : float or dict
        Acceptable probability of a nadir of grade ``grade`` or worse of ``lineage``; or
        several limits at once, every one of which the dose must meet: a dict
        ``{lineage: target}`` (grade ``grade``, capped at the lineage's highest) or
        ``{(lineage, grade): target}``, e.g. ``{"ANC": 0.2, ("PLT", 4): 0.1}`` for
        P(grade 4 neutropenia) <= 0.2 and P(PLT < 25) <= 0.1.
    lineage : str
        The lineage whose toxicity is limited when ``target`` is a number (grade bounds from
        the lineage table, :data:`pkpd.forecasting.lineage.LINEAGES`).
    grade : int
        CTCAE grade whose risk is limited (``P(nadir grade >= grade)``); at most the
        lineage's highest grade assigned from a value (3 for HGB).
    method : {"laplace", "nuts"}
    return_forecast : bool
        Also return the :class:`pkpd.forecasting.forecast.Forecast` of the candidate doses.
    **forecast_kwargs
        Passed to :func:`pkpd.forecasting.forecast.forecast` (``draws``, ``seed``, ``horizon``...).

    Returns
    -------
    pandas.DataFrame
        One row per patient × dose: ``id``, ``dose``, ``unit``, ``regimen``, ``p_grade``
        (``P(grade >= grade)``; with several limits the largest ratio of risk to its
        target decides and each risk has its column ``p_<lineage>_g<grade>``),
        ``acceptable`` and ``recommended`` (bool). ``.attrs``
        holds ``"recommended"`` (the dose, or None when no dose qualifies; a dict
        ID -> dose with several patients) and ``"message"``. With ``return_forecast``,
        ``(table, forecast)``.
    """
    if (candidates is None) == (dose_range is None):
        raise PkpdError("give either candidates (a list of doses) or dose_range (low, high)")
    limits = _limits(target, lineage, grade)
    if candidates is not None:
        doses = sorted({float(d) for d in candidates})
        if not doses or any(not (math.isfinite(d) and d > 0) for d in doses):
            raise PkpdError(f"candidates must be positive doses, got {candidates!r}")
    else:
        try:
            lo, hi = (float(x) for x in dose_range)
        except (TypeError, ValueError):
            raise PkpdError(f"dose_range must be (low, high), got {dose_range!r}") from None
        if not (0 < lo < hi):
            raise PkpdError(f"dose_range must satisfy 0 < low < high, got {dose_range!r}")
        doses = [lo, hi]
    from .forecast import _as_dataset

    ds = _as_dataset(patient, forecast_kwargs.pop("covariates", None))
    if forecast_kwargs.get("ids") is not None:
        ids = forecast_kwargs.pop("ids")
        ds = ds.subset(ids if isinstance(ids, (list, tuple)) else [ids])
    if start is None:
        df = ds.df
        dose_t = df.loc[df["EVID"].isin([1, 4]), "TIME"]
        start = (float(dose_t.max()) if len(dose_t) else 0.0) + 504.0
    else:
        start = parse_horizon(start) if isinstance(start, str) else float(start)
    names = [f"{d:g} {unit}" for d in doses]
    regimens = [_regimen(d, unit, duration, start) for d in doses]
    forecast_kwargs.setdefault("ready", ())
    lineages = list(dict.fromkeys(lin for lin, _, _ in limits))
    fc = forecast(prior, ds, regimens, method=method, lineage=lineages, regimen_names=names, **forecast_kwargs)

    def risks(f, i, k):
        return tuple(float(_risk(f, g, lin)[i, k]) for lin, g, _ in limits)

    def ok(r):
        return all(p <= t for p, (_, _, t) in zip(r, limits))

    # per patient: dose -> (P(grade >= g) of each limit)
    results = [{d: risks(fc, i, k) for k, d in enumerate(doses)} for i in range(len(fc.ids))]
    if dose_range is not None:
        tol = (hi - lo) / 100 if tol is None else float(tol)
        for i, res in enumerate(results):
            a, b = lo, hi  # invariant: every limit met at a, some limit broken at b (risks non-decreasing in dose)
            if not ok(res[lo]) or ok(res[hi]):
                continue
            while b - a > tol:
                mid = 0.5 * (a + b)
                proj = fc.project(_regimen(mid, unit, duration, start), [f"{mid:g} {unit}"])
                res[mid] = risks(proj, i, 0)
                a, b = (mid, b) if ok(res[mid]) else (a, mid)
    rows = []
    recommended = {}
    columns = [f"p_{lin}_g{g}" for lin, g, _ in limits]
    for pid, res in zip(fc.ids, results):
        good = [d for d in res if ok(res[d])]
        recommended[pid] = max(good) if good else None
        for d in sorted(res):
            worst = max(range(len(limits)), key=lambda j: res[d][j] / max(limits[j][2], 1e-12))
            row = {"id": pid, "dose": d, "unit": unit, "regimen": _regimen(d, unit, duration, start),
                   "p_grade": res[d][worst], "acceptable": ok(res[d]), "recommended": recommended[pid] == d}
            if len(limits) > 1:
                row.update(zip(columns, res[d]))
            rows.append(row)
    out = pd.DataFrame(rows, columns=["id", "dose", "unit", "regimen", "p_grade", "acceptable", "recommended"]
                       + (columns if len(limits) > 1 else []))
    msgs = []
    rule = " and ".join(f"P({lin} grade >= {g}) <= {t:g}" for lin, g, t in limits)
    for pid, d in recommended.items():
        res = results[fc.ids.index(pid)]
        if d is None:
            low = ", ".join(f"{p:.2f}" for p in res[min(res)])
            msgs.append(f"patient {pid}: no dose has {rule} (lowest dose {min(res):g} {unit}: {low})")
        else:
            got = ", ".join(f"{p:.2f}" for p in res[d])
            msgs.append(f"patient {pid}: {d:g} {unit} ({rule}: {got})")
    out.attrs["recommended"] = recommended[fc.ids[0]] if len(fc.ids) == 1 else recommended
    out.attrs["message"] = "; ".join(msgs)
    return (out, fc) if return_forecast else out
