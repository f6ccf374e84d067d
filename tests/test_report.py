"""Forecast report: patient summaries, JSON validation, table and fan chart."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pkpd.reporting.forecast import (
    FORECAST_SCHEMA,
    TABLE_COLUMNS,
    fan_chart,
    forecast_json,
    patient_summary,
    patient_table,
    validate_forecast_json,
    write_json,
)

T_H = np.arange(0.0, 21 * 24 + 1.0, 6.0)  # 6-hourly grid over 21 days


def _draws(n=200, seed=0):
    """V-shaped ANC trajectories: baseline 5, linear fall to a nadir, linear rise."""
    rng = np.random.default_rng(seed)
    nadir_v = rng.uniform(0.1, 1.4, n)
    nadir_t = rng.uniform(150.0, 220.0, n)
    rise = rng.uniform(0.005, 0.02, n)  # per hour
    fall = (5.0 - nadir_v) / nadir_t
    t = T_H[None, :]
    y = np.where(t <= nadir_t[:, None], 5.0 - fall[:, None] * t, nadir_v[:, None] + rise[:, None] * (t - nadir_t[:, None]))
    return np.minimum(y, 5.0), nadir_v, nadir_t, rise


@pytest.fixture
def entry():
    y, *_ = _draws()
    return patient_summary(T_H, y, patient_id="P1", regimen="doc100", ready=[(504.0, 1.5), (400.0, 1.0)], baseline=5.0)


def test_patient_summary_values(entry):
    y, nadir_v, nadir_t, rise = _draws()
    validate_forecast_json(forecast_json("friberg", "kloft2006", 0.9, 504.0, [entry]))
    assert entry["nadir"]["median"] == pytest.approx(np.median(np.min(y, axis=1)))
    assert entry["p_grade"]["4"] == pytest.approx(np.mean(np.min(y, axis=1) < 0.5))
    assert entry["p_grade"]["3"] == pytest.approx(np.mean(np.min(y, axis=1) < 1.0))
    # recovery to 1.5 is hand-computable on these V shapes
    rec15 = nadir_t + (1.5 - nadir_v) / rise
    rec15 = np.where(rec15 <= T_H[-1], rec15, np.nan)
    assert entry["recovery_h"]["1.5"]["p_not_recovered"] == pytest.approx(np.mean(np.isnan(rec15)))
    assert entry["recovery_h"]["1.5"]["median"] == pytest.approx(np.quantile(np.where(np.isnan(rec15), np.inf, rec15), 0.5))
    # baseline 5 is never regained within 21 days for slow risers → None quantiles
    rb = entry["recovery_h"]["baseline"]
    rec_b = nadir_t + (5.0 - nadir_v) / rise
    assert rb["p_not_recovered"] == pytest.approx(np.mean(rec_b > T_H[-1]))
    assert rb["p_not_recovered"] > 0.5 and rb["median"] is None and rb["hi"] is None
    assert set(entry["recovery_h"]) == {"1.0", "1.5", "baseline"}
    assert [r["time_h"] for r in entry["p_ready"]] == [504.0, 400.0]
    assert entry["p_ready"][0]["p"] == pytest.approx(np.mean(y[:, -1] >= 1.5))
    assert len(entry["trajectory"]["median"]) == T_H.size
    assert entry["trajectory"]["lo"][0] == pytest.approx(5.0)
    json.dumps(entry, allow_nan=False)  # plain JSON types only


def test_patient_summary_grade4_duration():
    # a single V: 5 → 0 at t = 100 → 5 at t = 200; below 0.5 for 2 * 10 h
    t = np.linspace(0.0, 300.0, 301)
    y = np.interp(t, [0, 100, 200, 300], [5, 0, 5, 5])[None, :].repeat(3, axis=0)
    e = patient_summary(t, y, patient_id="x", regimen="r")
    assert e["grade4_duration_h"]["mean"] == pytest.approx(20.0)
    assert e["grade4_duration_h"]["median"] == pytest.approx(20.0)
    assert e["recovery_h"]["1.0"]["median"] == pytest.approx(120.0)
    assert e["recovery_h"]["baseline"]["median"] == pytest.approx(200.0)  # baseline = first value
    assert e["nadir"]["time_h"]["median"] == pytest.approx(100.0)


def test_write_json_roundtrip(tmp_path, entry):
    obj = forecast_json("friberg", "kloft2006", 0.9, 504.0, [entry])
    path = tmp_path / "out" / "forecast.json"
    write_json(path, obj)
    back = json.loads(path.read_text())
    validate_forecast_json(back)
    assert back["patients"][0]["id"] == "P1"


def _valid(entry):
    return forecast_json("m", "p", 0.9, 504.0, [entry])


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda o: o.pop("prior"), "$: missing key 'prior'"),
        (lambda o: o["patients"][0]["nadir"].pop("lo"), "$.patients[0].nadir: missing key 'lo'"),
        (lambda o: o["patients"][0]["nadir"]["time_h"].update(mode=1.0), "$.patients[0].nadir.time_h.mode"),
        (lambda o: o.update(extra=1), "$.extra: unexpected key"),
        (lambda o: o["patients"][0]["p_grade"].update({"5": 0.1}), "$.patients[0].p_grade.5"),
        (lambda o: o["patients"][0].update(id=3), "$.patients[0].id: expected string"),
        (lambda o: o["patients"][0]["nadir"].update(median="0.5"), "$.patients[0].nadir.median: expected number"),
        (lambda o: o["patients"][0]["nadir"].update(median=True), "$.patients[0].nadir.median: expected number"),
        (lambda o: o["patients"][0]["nadir"].update(median=None), "$.patients[0].nadir.median: expected number"),
        (lambda o: o["patients"][0]["nadir"].update(hi=float("nan")), "$.patients[0].nadir.hi: number must be finite"),
        (lambda o: o["patients"][0]["trajectory"]["lo"].__setitem__(3, float("inf")), "$.patients[0].trajectory.lo[3]"),
        (lambda o: o["patients"][0]["trajectory"]["hi"].pop(), "$.patients[0].trajectory.hi: length"),
        (lambda o: o["patients"][0]["p_grade"].update({"4": 1.5}), "$.patients[0].p_grade.4"),
        (lambda o: o["patients"][0]["recovery_h"].pop("baseline"), "$.patients[0].recovery_h: missing key 'baseline'"),
        (lambda o: o["patients"][0]["recovery_h"].update(soon={}), "$.patients[0].recovery_h.soon"),
        (
            lambda o: o["patients"][0]["recovery_h"]["1.5"].pop("p_not_recovered"),
            "$.patients[0].recovery_h.1.5: missing key 'p_not_recovered'",
        ),
        (lambda o: o["patients"][0]["p_ready"][1].update(p=float("nan")), "$.patients[0].p_ready[1].p"),
        (lambda o: o.update(patients={}), "$.patients: expected array"),
        (lambda o: o.update(interval=1.0), "$.interval"),
    ],
)
def test_validator_rejects(entry, mutate, where):
    obj = copy.deepcopy(_valid(entry))
    mutate(obj)
    with pytest.raises(ValueError) as info:
        validate_forecast_json(obj)
    assert where in str(info.value)


def test_validator_accepts_null_recovery_and_extra_levels(entry):
    obj = copy.deepcopy(_valid(entry))
    obj["patients"][0]["recovery_h"]["2.0"] = {"median": None, "lo": None, "hi": None, "p_not_recovered": 1.0}
    validate_forecast_json(obj)
    assert FORECAST_SCHEMA["additionalProperties"] is False


def test_forecast_json_refuses_nan(entry):
    bad = copy.deepcopy(entry)
    bad["grade4_duration_h"]["mean"] = float("nan")
    with pytest.raises(ValueError, match=r"grade4_duration_h\.mean"):
        forecast_json("m", "p", 0.9, 504.0, [bad])


def test_patient_table(entry):
    e2 = copy.deepcopy(entry)
    e2["regimen"] = "doc75"
    e2["p_ready"] = []
    e2["recovery_h"]["1.5"]["median"] = None
    df = patient_table([entry, e2])
    assert list(df.columns) == list(TABLE_COLUMNS)
    assert len(df) == 2 and list(df["regimen"]) == ["doc100", "doc75"]
    assert df.loc[0, "nadir_day"] == pytest.approx(entry["nadir"]["time_h"]["median"] / 24.0)
    assert df.loc[0, "p_ready"] == entry["p_ready"][0]["p"]
    assert np.isnan(df.loc[1, "p_ready"]) and np.isnan(df.loc[1, "recovery_day_1.5"])
    assert df.loc[0, "recovery_day_1.5"] == pytest.approx(entry["recovery_h"]["1.5"]["median"] / 24.0)


def _panels():
    y, *_ = _draws(100)
    q = np.quantile(y, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    base = {"t_h": T_H, "lo90": q[0], "lo50": q[1], "median": q[2], "hi50": q[3], "hi90": q[4]}
    return [
        {**base, "title": "docetaxel 100", "obs_t_h": [0.0, 48.0, 96.0], "obs": [5.0, 4.1, 3.0]},
        {**base, "title": "docetaxel 75", "obs_t_h": [], "obs": []},
    ]


@pytest.mark.parametrize("log", [False, True])
def test_fan_chart_png(tmp_path, log):
    path = tmp_path / "fan.png"
    fan_chart(path, _panels(), title="P1", log=log)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(data) < 5_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["fan.png"]


def test_fan_chart_failure_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        fan_chart(tmp_path / "fan.png", _panels())
    assert list(tmp_path.iterdir()) == []


def test_fan_chart_bad_panel_leaves_no_file(tmp_path):
    panels = _panels()
    del panels[1]["hi90"]
    with pytest.raises(KeyError):
        fan_chart(tmp_path / "fan.png", panels)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- per-lineage entries
def _plt_draws(n=200, seed=1):
    """V-shaped platelet trajectories: baseline 250, linear fall to a nadir, linear rise."""
    y, nadir_v, nadir_t, rise = _draws(n, seed)
    return y * 50.0, nadir_v * 50.0, nadir_t, rise * 50.0


def test_platelet_summary_uses_the_lineage_table():
    y, nadir_v, nadir_t, rise = _plt_draws()
    e = patient_summary(T_H, y, patient_id="P1", regimen="carbo", lineage="PLT", ready=[(504.0, 100.0)])
    assert e["lineage"] == "PLT"
    assert set(e["recovery_h"]) == {"100.0", "75.0", "baseline"}
    rec100 = nadir_t + (100.0 - nadir_v) / rise
    rec100 = np.where(rec100 <= T_H[-1], rec100, np.nan)
    assert e["recovery_h"]["100.0"]["p_not_recovered"] == pytest.approx(np.mean(np.isnan(rec100)))
    mins = np.min(y, axis=1)
    assert e["p_grade"]["4"] == pytest.approx(np.mean(mins < 25.0))
    assert e["p_grade"]["3"] == pytest.approx(np.mean(mins < 50.0))
    assert 0.0 < e["p_grade"]["4"] < e["p_grade"]["3"] < 1.0  # the check can fail
    assert e["p_transfusion"] == {"10.0": pytest.approx(np.mean(mins < 10.0)),
                                  "20.0": pytest.approx(np.mean(mins < 20.0))}
    assert 0.0 < e["p_transfusion"]["10.0"] < e["p_transfusion"]["20.0"]
    # duration below the grade-4 bound (25) of the linearly interpolated draws, by brute-force quadrature
    fine = np.arange(0.0, T_H[-1], 0.005) + 0.0025
    below = [np.sum(np.interp(fine, T_H, yi) < 25.0) * 0.005 for yi in y]
    assert e["grade4_duration_h"]["mean"] == pytest.approx(np.mean(below), rel=1e-3)
    assert e["grade4_duration_h"]["mean"] > 0.0
    # ANC keeps its shape: no lineage-specific keys
    anc = patient_summary(T_H, y / 50.0, patient_id="P1", regimen="carbo")
    assert "p_transfusion" not in anc and set(anc["recovery_h"]) == {"1.0", "1.5", "baseline"}
    # haemoglobin: no grade 4 from a value, transfusion thresholds 7 and 8 g/dL
    hb = patient_summary(T_H, 6.0 + y / 50.0, patient_id="P1", regimen="r", lineage="HGB")
    assert hb["p_grade"]["4"] == 0.0 and hb["grade4_duration_h"] == {"mean": 0.0, "median": 0.0}
    assert set(hb["p_transfusion"]) == {"7.0", "8.0"} and set(hb["recovery_h"]) == {"10.0", "baseline"}


def _with_lineages(entry):
    y, *_ = _plt_draws()
    plt = patient_summary(T_H, y, patient_id="P1", regimen="doc100", lineage="PLT")
    lineages = [
        {"lineage": "ANC", "unit": "10^9/L", "grades": {"1": 2.0, "2": 1.5, "3": 1.0, "4": 0.5},
         "baseline_parameter": "Circ0", "patients": [entry]},
        {"lineage": "PLT", "unit": "10^9/L", "grades": {"1": 150.0, "2": 75.0, "3": 50.0, "4": 25.0},
         "baseline_parameter": None, "patients": [plt]},
    ]
    return forecast_json("m", "p", 0.9, 504.0, [entry], lineages=lineages)


def test_schema_accepts_lineages(entry):
    obj = _with_lineages(entry)
    validate_forecast_json(obj)
    back = json.loads(json.dumps(obj, allow_nan=False))
    validate_forecast_json(back)
    assert [lin["lineage"] for lin in back["lineages"]] == ["ANC", "PLT"]
    # without lineages (single-lineage JSON as before) it still validates
    validate_forecast_json(forecast_json("m", "p", 0.9, 504.0, [entry]))
    assert "lineages" not in forecast_json("m", "p", 0.9, 504.0, [entry])


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda o: o["lineages"][1]["patients"][0]["p_transfusion"].update({"10.0": 1.5}),
         "$.lineages[1].patients[0].p_transfusion.10.0"),
        (lambda o: o["lineages"][1]["patients"][0]["p_transfusion"].update({"soon": 0.1}),
         "$.lineages[1].patients[0].p_transfusion.soon"),
        (lambda o: o["lineages"][1]["patients"][0].update(lineage="ANC"), "$.lineages[1].patients[0].lineage"),
        (lambda o: o["lineages"][1].update(lineage="ANC"), "$.lineages[1].lineage: 'ANC' appears twice"),
        (lambda o: o["lineages"][1]["grades"].update({"5": 1.0}), "$.lineages[1].grades.5"),
        (lambda o: o["lineages"][0].pop("unit"), "$.lineages[0]: missing key 'unit'"),
        (lambda o: o["lineages"][1]["patients"][0].pop("nadir"), "$.lineages[1].patients[0]: missing key 'nadir'"),
        (lambda o: o["lineages"][1]["patients"][0].update(extra=1), "$.lineages[1].patients[0].extra: unexpected key"),
        (lambda o: o["lineages"][1]["patients"][0]["trajectory"]["lo"].pop(),
         "$.lineages[1].patients[0].trajectory.lo"),
        (lambda o: o["patients"][0].update(p_transfusion={"10.0": 0.1}), "$.patients[0].p_transfusion: unexpected key"),
        (lambda o: o.update(lineages={}), "$.lineages: expected array"),
    ],
)
def test_validator_rejects_bad_lineages(entry, mutate, where):
    obj = copy.deepcopy(_with_lineages(entry))
    mutate(obj)
    with pytest.raises(ValueError) as info:
        validate_forecast_json(obj)
    assert where in str(info.value)
