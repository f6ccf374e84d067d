"""Reports of the supportive-care planner (:mod:`pkpd.forecasting.planner`): the JSON and the figure.

The JSON written by :meth:`pkpd.forecasting.planner.Plan.to_json` has the shape of
:data:`PLAN_SCHEMA` (checked by :func:`validate_plan_json`)::

    {"model": str, "prior": str, "interval": 0.9, "cycle_length_h": float,
     "plans": [{"plan": "none", "regimen": "docetaxel 191 mg 1h infusion @3w"}, ...],
     "transfusion_rules": [{"lineage": "PLT", "threshold": 10.0, "units": 1.0}],
     "endpoints": [{"id": "8", "plan": "delay 7d", "lineage": "ANC",
                    "endpoint": "P(grade 4 neutropenia)", "unit": "probability" | "d" | "count",
                    "better": "lower" | "higher",
                    "value": f,                      # mean over the draws (probability / expectation)
                    "lo": f|null, "hi": f|null,     # interval of the value (not for probabilities)
                    "difference": f|null,           # mean paired difference from the first plan
                    "difference_lo": f|null, "difference_hi": f|null,  # its interval (not for probabilities)
                    "p_better": f|null, "mcse": f|null}]}                # null for the first plan

Probabilities lie in [0, 1]; every number is finite.
"""

from __future__ import annotations

import numpy as np

from ..errors import PkpdError
from .forecast import _check, _fmt_bound, _axis_label

__all__ = ["PLAN_SCHEMA", "plan_json", "validate_plan_json", "plan_chart"]

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_PROB_OR_NULL = {"type": ["number", "null"], "minimum": 0.0, "maximum": 1.0}


def _obj(**props):
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_ENDPOINT = _obj(
    id={"type": "string"}, plan={"type": "string"}, lineage={"type": "string"}, endpoint={"type": "string"},
    unit={"type": "string"}, better={"type": "string"}, value=_NUM, lo=_NUM_OR_NULL, hi=_NUM_OR_NULL,
    difference=_NUM_OR_NULL, difference_lo=_NUM_OR_NULL, difference_hi=_NUM_OR_NULL, p_better=_PROB_OR_NULL,
    mcse=_NUM_OR_NULL,
)

#: Schema of the plan JSON (the JSON-schema subset of :mod:`pkpd.reporting.forecast`).
PLAN_SCHEMA = _obj(
    model={"type": "string"},
    prior={"type": "string"},
    interval={"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0},
    cycle_length_h={"type": "number", "exclusiveMinimum": 0.0},
    plans={"type": "array", "items": _obj(plan={"type": "string"}, regimen={"type": "string"})},
    transfusion_rules={"type": "array", "items": _obj(lineage={"type": "string"},
                                                       threshold={"type": "number", "exclusiveMinimum": 0.0},
                                                       units={"type": "number", "exclusiveMinimum": 0.0})},
    endpoints={"type": "array", "items": _ENDPOINT},
)


def validate_plan_json(obj) -> None:
    """Check a plan structure against :data:`PLAN_SCHEMA`, and that every endpoint names a plan
    of ``plans``, probabilities lie in [0, 1] and ``unit``/``better`` take their documented values.

    Raises
    ------
    ValueError
        At the first problem, with its path (``$.endpoints[3].value: ...``).
    """
    _check(obj, PLAN_SCHEMA, "$")
    names = {p["plan"] for p in obj["plans"]}
    for k, e in enumerate(obj["endpoints"]):
        path = f"$.endpoints[{k}]"
        if e["plan"] not in names:
            raise ValueError(f"{path}.plan: {e['plan']!r} is not one of the plans {sorted(names)}")
        if e["unit"] not in ("probability", "d", "count"):
            raise ValueError(f"{path}.unit: expected 'probability', 'd' or 'count', got {e['unit']!r}")
        if e["better"] not in ("lower", "higher"):
            raise ValueError(f"{path}.better: expected 'lower' or 'higher', got {e['better']!r}")
        if e["unit"] == "probability" and not 0.0 <= e["value"] <= 1.0:
            raise ValueError(f"{path}.value: a probability must lie in [0, 1], got {e['value']}")


def plan_json(plan) -> dict:
    """The JSON structure of a :class:`pkpd.forecasting.planner.Plan` (validated)."""
    fc = plan.forecast
    obj = {
        "model": str(fc.model_name), "prior": str(fc.prior_name), "interval": float(fc.interval),
        "cycle_length_h": float(plan.cycle_length_h),
        "plans": [{"plan": p, "regimen": r} for p, r in zip(plan.plans, plan.regimens)],
        "transfusion_rules": [{"lineage": lin, "threshold": float(thr), "units": float(u)} for lin, thr, u in plan.rules],
        "endpoints": [dict(r) for r in plan.records],
    }
    validate_plan_json(obj)
    return obj


def plan_chart(path, plan, patient=None) -> None:
    """Write a PNG with one fan chart per lineage (rows) and plan (columns): median, 50% and
    ``interval`` bands of the counts without transfusions, observed counts as points, the
    CTCAE grade bounds, and the next cycle's day as a vertical line. Written atomically
    (matplotlib's Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..forecasting import endpoints as ep
    from ..io import atomic_path

    fc = plan.forecast
    pid = fc.ids[0] if patient is None else patient
    if pid not in fc.ids:
        raise PkpdError(f"unknown patient ID {pid!r}: the plan has {fc.ids}")
    i = fc.ids.index(pid)
    lineages = list(fc.lineages)
    n_plans = len(plan.plans)
    lo_q, hi_q = (1 - fc.interval) / 2, 1 - (1 - fc.interval) / 2
    fig = Figure(figsize=(3.6 * n_plans, 2.8 * len(lineages)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(lineages), n_plans, squeeze=False, sharex=True, sharey="row")
    days = fc.time_h / 24.0
    observed = fc._context.get("observed_by_lineage", {})
    for row, lin in enumerate(lineages):
        bounds = ep.grade_thresholds(lin)
        obs_t, obs_y = observed.get(lin, {}).get(pid, (np.array([]), np.array([])))
        for col, name in enumerate(plan.plans):
            ax = axes[row][col]
            y = fc.lineage_trajectories[lin][:, i, col, :]
            y = y[np.all(np.isfinite(y), axis=1)]
            q = np.quantile(y, [0.5, 0.25, 0.75, lo_q, hi_q], axis=0)
            ax.fill_between(days, q[3], q[4], color="C0", alpha=0.2, lw=0)
            ax.fill_between(days, q[1], q[2], color="C0", alpha=0.4, lw=0)
            ax.plot(days, q[0], color="C0", lw=1.4)
            if len(obs_t):
                ax.plot(np.asarray(obs_t) / 24.0, obs_y, "o", color="k", ms=3)
            for g in (max(bounds),):  # the highest grade's bound (grade 4; grade 3 for Hb)
                if g in bounds:
                    ax.axhline(bounds[g], color="C3", ls="--", lw=0.7)
                    ax.annotate(f"G{g} <{_fmt_bound(bounds[g])}", xy=(1.0, bounds[g]),
                                xycoords=("axes fraction", "data"), xytext=(-2, 2), textcoords="offset points",
                                ha="right", fontsize=7, color="C3")
            ax.axvline((fc.after[i, col] + plan.cycle_length_h) / 24.0, color="0.4", lw=0.8, ls=":")
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(_axis_label(lin))
            if row == len(lineages) - 1:
                ax.set_xlabel("day")
    fig.suptitle(f"patient {pid}: {fc.model_name}, supportive-care plans (dotted: next cycle)", fontsize=10)
    with atomic_path(str(path), ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
