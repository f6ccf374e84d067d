"""Forecast reports: endpoint summaries per patient, the forecast JSON, tables and fan charts.

The JSON written by :func:`forecast_json` has exactly the shape of
:data:`FORECAST_SCHEMA` (checked by :func:`validate_forecast_json`, a small validator
for the subset of JSON-schema keywords used here, so no ``jsonschema`` dependency)::

    {"model": str, "prior": str, "interval": 0.9, "horizon_h": float,
     "patients": [{"id": str, "regimen": str, "lineage": "ANC",
       "nadir": {"median", "lo", "hi", "time_h": {"median", "lo", "hi"}},
       "p_grade": {"3": p, "4": p},
       "grade4_duration_h": {"mean", "median"},
       "recovery_h": {"1.0": R, "1.5": R, "baseline": R},
       "p_ready": [{"time_h", "threshold", "p"}],
       "trajectory": {"time_h": [...], "median": [...], "lo": [...], "hi": [...]}}]}

with ``R = {"median": f|null, "lo": f|null, "hi": f|null, "p_not_recovered": f}``.
The ``patients`` entries are those of the primary lineage (ANC when it is forecast).
A forecast of several lineages adds (optional key, absent in single-lineage JSON of
older versions)::

     "lineages": [{"lineage": "PLT", "unit": "10^9/L",
                   "grades": {"1": 150.0, "2": 75.0, "3": 50.0, "4": 25.0},
                   "baseline_parameter": "Circ0" | null,
                   "patients": [<entry as above, for that lineage,
                                 plus "p_transfusion": {"10.0": p, "20.0": p} for PLT/HGB>]}]

one element per forecast lineage (the primary one included), with that lineage's
grade bounds, recovery levels (``recovery_h`` keys: PLT ``"100.0"``, ``"75.0"``...),
readiness and transfusion thresholds (:data:`pkpd.forecasting.lineage.LINEAGES`).
Numbers must be finite (NaN/inf are errors; ``null`` marks "not reached"). Endpoint
definitions are those of :mod:`pkpd.forecasting.endpoints` (CTCAE v5.0; DDMODEL00000224).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from ..forecasting import endpoints as ep
from ..forecasting.endpoints import patient_summary
from ..forecasting.lineage import LINEAGES
from ..errors import PkpdError
from ..io import atomic_path, write_text_atomic

__all__ = [
    "FORECAST_SCHEMA",
    "validate_forecast_json",
    "patient_summary",
    "patient_table",
    "forecast_json",
    "write_json",
    "fan_chart",
]

_NUM = {"type": "number"}
_PROB = {"type": "number", "minimum": 0.0, "maximum": 1.0}
_NUM_OR_NULL = {"type": ["number", "null"]}
_NUM_LIST = {"type": "array", "items": _NUM}


def _obj(**props):
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_RECOVERY = _obj(median=_NUM_OR_NULL, lo=_NUM_OR_NULL, hi=_NUM_OR_NULL, p_not_recovered=_PROB)

_RECOVERY_LEVELS = {
    "type": "object",
    "properties": {"baseline": _RECOVERY},
    "required": ["baseline"],
    "propertyNames": {"pattern": r"^(baseline|[0-9]+(\.[0-9]+)?)$"},
    "additionalProperties": _RECOVERY,
}

#: Properties of one patient × regimen entry (all required in ``patients``).
_ENTRY_PROPERTIES = dict(
    id={"type": "string"},
    regimen={"type": "string"},
    lineage={"type": "string"},
    nadir=_obj(median=_NUM, lo=_NUM, hi=_NUM, time_h=_obj(median=_NUM, lo=_NUM, hi=_NUM)),
    p_grade=_obj(**{"3": _PROB, "4": _PROB}),
    grade4_duration_h=_obj(mean=_NUM, median=_NUM),
    recovery_h=_RECOVERY_LEVELS,
    p_ready={"type": "array", "items": _obj(time_h=_NUM, threshold=_NUM, p=_PROB)},
    trajectory=_obj(time_h=_NUM_LIST, median=_NUM_LIST, lo=_NUM_LIST, hi=_NUM_LIST),
)

_LEVEL = r"^[0-9]+(\.[0-9]+)?$"
_REACHED = _obj(median=_NUM_OR_NULL, lo=_NUM_OR_NULL, hi=_NUM_OR_NULL, p_not_reached=_PROB)

#: An entry of a lineage: the same, plus the optional lineage-specific endpoints
#: (:mod:`pkpd.forecasting.lineage_endpoints`).
_LINEAGE_ENTRY = {
    "type": "object",
    "properties": {
        **_ENTRY_PROPERTIES,
        "p_transfusion": {
            "type": "object",
            "properties": {},
            "propertyNames": {"pattern": _LEVEL},
            "additionalProperties": _PROB,
        },
        "time_below_h": {"type": "object", "properties": {}, "propertyNames": {"pattern": _LEVEL},
                         "additionalProperties": _obj(mean=_NUM, median=_NUM)},
        "p_below_by_day": {"type": "object", "properties": {"time_h": _NUM_LIST}, "required": ["time_h"],
                           "propertyNames": {"pattern": r"^(time_h|[0-9]+(\.[0-9]+)?)$"},
                           "additionalProperties": {"type": "array", "items": _PROB}},
        "engraftment_day": _obj(median=_NUM_OR_NULL, lo=_NUM_OR_NULL, hi=_NUM_OR_NULL, p_not_engrafted=_PROB),
        "esa": _obj(time_to_h={"type": "object", "properties": {}, "propertyNames": {"pattern": _LEVEL},
                               "additionalProperties": _REACHED},
                    p_rise_gt_1_in_2w=_PROB, p_above_12=_PROB),
    },
    "required": list(_ENTRY_PROPERTIES),
    "additionalProperties": False,
}

#: One element of ``lineages``.
_LINEAGE = _obj(
    lineage={"type": "string"},
    unit={"type": "string"},
    grades={"type": "object", "properties": {}, "propertyNames": {"pattern": r"^[1-4]$"},
            "additionalProperties": {"type": "number", "exclusiveMinimum": 0.0}},
    baseline_parameter={"type": ["string", "null"]},
    patients={"type": "array", "items": _LINEAGE_ENTRY},
)

#: One paired comparison record (:mod:`pkpd.forecasting.compare`).
_COMPARISON = _obj(
    id={"type": "string"}, lineage={"type": "string"}, endpoint={"type": "string"}, unit={"type": "string"},
    better={"type": "string"}, reference={"type": "string"}, alternative={"type": "string"},
    reference_value=_NUM_OR_NULL, alternative_value=_NUM_OR_NULL, difference=_NUM_OR_NULL, lo=_NUM_OR_NULL,
    hi=_NUM_OR_NULL, p_better=_PROB, mcse=_NUM_OR_NULL,
)

#: Schema of the forecast JSON (JSON-schema keywords: type, properties, required,
#: additionalProperties, propertyNames.pattern, items, minimum, maximum,
#: exclusiveMinimum, exclusiveMaximum). "number" means a finite int or float (not bool).
#: ``lineages`` is optional (JSON of single-lineage forecasts of older versions lacks it);
#: ``comparison`` (paired regimen differences) only comes with a comparison.
FORECAST_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "prior": {"type": "string"},
        "interval": {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0},
        "horizon_h": _NUM,
        "patients": {"type": "array", "items": _obj(**_ENTRY_PROPERTIES)},
        "lineages": {"type": "array", "items": _LINEAGE},
        "comparison": {"type": "array", "items": _COMPARISON},
    },
    "required": ["model", "prior", "interval", "horizon_h", "patients"],
    "additionalProperties": False,
}


# ----------------------------------------------------------------------------- validation
def _type_ok(value, name):
    if name == "string":
        return isinstance(value, str)
    if name == "null":
        return value is None
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    raise ValueError(f"schema: unknown type {name!r}")


def _check(obj, schema, path):
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(_type_ok(obj, n) for n in types):
        raise ValueError(f"{path}: expected {' or '.join(types)}, got {type(obj).__name__}")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if not math.isfinite(obj):
            raise ValueError(f"{path}: number must be finite, got {obj}")
        if "minimum" in schema and obj < schema["minimum"]:
            raise ValueError(f"{path}: {obj} < minimum {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"]:
            raise ValueError(f"{path}: {obj} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and obj <= schema["exclusiveMinimum"]:
            raise ValueError(f"{path}: {obj} <= exclusive minimum {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and obj >= schema["exclusiveMaximum"]:
            raise ValueError(f"{path}: {obj} >= exclusive maximum {schema['exclusiveMaximum']}")
    elif isinstance(obj, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in obj:
                raise ValueError(f"{path}: missing key {key!r}")
        pattern = schema.get("propertyNames", {}).get("pattern")
        extra = schema.get("additionalProperties", True)
        for key, value in obj.items():
            sub = f"{path}.{key}"
            if not isinstance(key, str):
                raise ValueError(f"{sub}: keys must be strings")
            if pattern is not None and not re.fullmatch(pattern, key):
                raise ValueError(f"{sub}: key does not match {pattern}")
            if key in props:
                _check(value, props[key], sub)
            elif extra is False:
                raise ValueError(f"{sub}: unexpected key")
            elif isinstance(extra, dict):
                _check(value, extra, sub)
    elif isinstance(obj, list) and "items" in schema:
        for i, value in enumerate(obj):
            _check(value, schema["items"], f"{path}[{i}]")


def validate_forecast_json(obj) -> None:
    """Check a forecast structure against :data:`FORECAST_SCHEMA`.

    Besides the schema, the four lists of each ``trajectory`` must have equal length, a
    lineage may appear once in ``lineages``, and its entries must name it.

    Parameters
    ----------
    obj : dict
        The structure (as built by :func:`forecast_json` or read back from JSON).

    Raises
    ------
    ValueError
        At the first problem, with its path (e.g. ``$.patients[0].nadir.lo: ...``).
    """
    _check(obj, FORECAST_SCHEMA, "$")
    _check_trajectories(obj["patients"], "$.patients")
    seen = set()
    for k, lin in enumerate(obj.get("lineages", [])):
        path = f"$.lineages[{k}]"
        if lin["lineage"] in seen:
            raise ValueError(f"{path}.lineage: {lin['lineage']!r} appears twice")
        seen.add(lin["lineage"])
        for i, p in enumerate(lin["patients"]):
            if p["lineage"] != lin["lineage"]:
                raise ValueError(f"{path}.patients[{i}].lineage: {p['lineage']!r} in the entry of {lin['lineage']!r}")
        _check_trajectories(lin["patients"], f"{path}.patients")


def _check_trajectories(entries, path):
    for i, p in enumerate(entries):
        traj = p["trajectory"]
        n = len(traj["time_h"])
        for key in ("median", "lo", "hi"):
            if len(traj[key]) != n:
                raise ValueError(f"{path}[{i}].trajectory.{key}: length {len(traj[key])} != len(time_h) {n}")


# ----------------------------------------------------------------------------- summaries
# patient_summary is numeric (endpoint summaries of draws): it lives in
# pkpd.forecasting.endpoints and is re-exported here for the report's users.


#: Columns of :func:`patient_table`.
TABLE_COLUMNS = (
    "id",
    "regimen",
    "nadir_median",
    "nadir_lo",
    "nadir_hi",
    "nadir_day",
    "p_grade3",
    "p_grade4",
    "grade4_days_median",
    "recovery_day_1.5",
    "p_ready",
)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def patient_table(entries) -> pd.DataFrame:
    """One row per patient × regimen from :func:`patient_summary` entries.

    Columns (:data:`TABLE_COLUMNS`): ``id``, ``regimen``, ``nadir_median``,
    ``nadir_lo``, ``nadir_hi`` (count units), ``nadir_day`` (median nadir time / 24),
    ``p_grade3``, ``p_grade4``, ``grade4_days_median`` (median grade-4 duration / 24),
    ``recovery_day_1.5`` (median recovery time to 1.5 / 24; NaN when not reached or not
    computed) and ``p_ready`` (first readiness check; NaN when there is none).
    """
    rows = []
    for e in entries:
        rec = e["recovery_h"].get("1.5")
        rows.append(
            {
                "id": e["id"],
                "regimen": e["regimen"],
                "nadir_median": _num(e["nadir"]["median"]),
                "nadir_lo": _num(e["nadir"]["lo"]),
                "nadir_hi": _num(e["nadir"]["hi"]),
                "nadir_day": _num(e["nadir"]["time_h"]["median"]) / 24.0,
                "p_grade3": _num(e["p_grade"]["3"]),
                "p_grade4": _num(e["p_grade"]["4"]),
                "grade4_days_median": _num(e["grade4_duration_h"]["median"]) / 24.0,
                "recovery_day_1.5": _num(None if rec is None else rec["median"]) / 24.0,
                "p_ready": _num(e["p_ready"][0]["p"]) if e["p_ready"] else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def forecast_json(model_name, prior_name, interval, horizon_h, entries, lineages=None, comparison=None) -> dict:
    """The full forecast structure, validated against :data:`FORECAST_SCHEMA`.

    Parameters
    ----------
    model_name, prior_name : str
    interval, horizon_h : float
    entries : list of dict
        ``patients``: the entries of the primary lineage (:func:`patient_summary`).
    lineages : list of dict, optional
        ``lineages`` (:meth:`pkpd.forecasting.forecast.Forecast.lineage_json`); left out
        when None.
    comparison : list of dict, optional
        Paired regimen differences (:class:`pkpd.forecasting.compare.Comparison`); left out
        when None.

    Raises
    ------
    ValueError
        If the result does not validate (path of the first problem in the message).
    """
    obj = {
        "model": str(model_name),
        "prior": str(prior_name),
        "interval": float(interval),
        "horizon_h": float(horizon_h),
        "patients": list(entries),
    }
    if lineages is not None:
        obj["lineages"] = list(lineages)
    if comparison is not None:
        obj["comparison"] = list(comparison)
    validate_forecast_json(obj)
    return obj


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically; NaN/inf are refused (ValueError)."""
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- fan chart
def _axis_label(lineage) -> str:
    key = str(lineage).upper()
    if key == "HGB":
        return "Hb (g/dL)"
    unit = LINEAGES[key].unit if key in LINEAGES else "10^9/L"
    return f"{lineage} ({unit.replace('10^9', '×10⁹')})"


def _fmt_bound(v: float) -> str:
    s = f"{v:g}"
    return s + ".0" if "." not in s and "e" not in s and abs(v) < 10 else s


def fan_chart(path, panels, *, lineage="ANC", thresholds=None, lln=None, title=None, log=False, grades=(2, 3, 4)):
    """Write a PNG fan chart, one panel per regimen.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, no
    global backend change); the file is written atomically.

    Parameters
    ----------
    path : str or path-like
    panels : list of dict
        Keys ``title``, ``t_h`` [T] (h), ``median``, ``lo50``, ``hi50``, ``lo90``,
        ``hi90`` [T], and optionally ``obs_t_h``, ``obs`` (observed counts, drawn as
        points).
    lineage : str
        Selects the CTCAE v5 bounds drawn as dashed lines (``"G3 <1.0"``, ...).
    thresholds, lln
        Grade bounds, see :func:`pkpd.forecasting.endpoints.grade_thresholds`.
    title : str, optional
        Figure title.
    log : bool
        Logarithmic y axis.
    grades : sequence of int
        Grades whose bounds are drawn (those without a bound are skipped).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if not panels:
        raise PkpdError("fan_chart needs at least one panel")
    bounds = ep.grade_thresholds(lineage, lln, thresholds)
    n = len(panels)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for k, panel in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        d = np.asarray(panel["t_h"], dtype=float) / 24.0
        ax.fill_between(d, panel["lo90"], panel["hi90"], color="C0", alpha=0.2, lw=0, label="90%")
        ax.fill_between(d, panel["lo50"], panel["hi50"], color="C0", alpha=0.4, lw=0, label="50%")
        ax.plot(d, np.asarray(panel["median"], dtype=float), color="C0", lw=1.5, label="median")
        if panel.get("obs") is not None and len(panel["obs"]):
            ax.plot(
                np.asarray(panel["obs_t_h"], dtype=float) / 24.0,
                np.asarray(panel["obs"], dtype=float),
                "o",
                color="k",
                ms=3.5,
                label="observed",
                zorder=5,
            )
        for g in grades:
            if g in bounds:
                ax.axhline(bounds[g], color="C3", ls="--", lw=0.8, alpha=0.8)
                ax.annotate(
                    f"G{g} <{_fmt_bound(bounds[g])}",
                    xy=(1.0, bounds[g]),
                    xycoords=("axes fraction", "data"),
                    xytext=(-2, 2),
                    textcoords="offset points",
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color="C3",
                )
        if log:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_title(str(panel.get("title", "")))
        ax.set_xlabel("time (days)")
        if k % ncols == 0:
            ax.set_ylabel(_axis_label(lineage))
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=len(labels))
    if title:
        fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
