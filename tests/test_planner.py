"""The supportive-care planner (pkpd.forecasting.planner, pkpd.reporting.plan, `pkpd plan`): plan
parsing, the default cycle, endpoints recomputed from the forecast's own trajectories, paired
differences, the JSON schema and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pkpd
from pkpd.cli import main
from pkpd.dosing.regimen import parse_regimen
from pkpd.errors import PkpdError
from pkpd.forecasting.planner import _default_cycle, parse_plan, parse_transfusion_rule
from pkpd.reporting.plan import validate_plan_json

CYCLE = parse_regimen("docetaxel 100 mg/m2 1h @504h")
CARD = "friberg2002_docetaxel_linear"


def test_plans_change_the_cycle_and_time_supportive_care_from_its_start():
    def text(option):
        return str(parse_plan(option, CYCLE, 504.0, 504.0))

    assert text("none") == text("") == "docetaxel 100 mg/m2 1h infusion @3w"
    assert text("delay 7d") == "docetaxel 100 mg/m2 1h infusion @4w"
    assert text("dose 80%") == "docetaxel 80 mg/m2 1h infusion @3w"
    assert text("pegfilgrastim 6 mg sc @24h") == \
        "docetaxel 100 mg/m2 1h infusion @3w; pegfilgrastim 6 mg sc @22d"
    # a delay moves the supportive care with the cycle; the dose change touches only the cycle
    assert text("dose 75% + delay 1w + pegfilgrastim 6 mg sc @24h") == \
        "docetaxel 75 mg/m2 1h infusion @4w; pegfilgrastim 6 mg sc @29d"
    # a repeated dose without a count repeats through the cycle; a written count is kept
    weekly = parse_plan("romiplostim 3 ug/kg sc weekly", CYCLE, 504.0, 504.0).items[1]
    assert (weekly.count, weekly.start, weekly.interval) == (3, 504.0, 168.0)
    assert parse_plan("romiplostim 3 ug/kg sc weekly x2", CYCLE, 504.0, 504.0).items[1].count == 2
    assert parse_plan("darbepoetin 500 ug sc q3w", CYCLE, 504.0, 504.0).items[1].count == 1


@pytest.mark.parametrize("option, message", [
    ("delay 7 parsecs", "delay"), ("dose 0%", r"\(0, 200\]"), ("dose 250%", r"\(0, 200\]"),
    ("delay 1d + delay 2d", "more than one delay"), ("dose 80% + dose 90%", "more than one dose"),
    ("pegfilgrastim six mg", "is not 'none'"),
])
def test_bad_plans_name_the_problem(option, message):
    with pytest.raises(PkpdError, match=message):
        parse_plan(option, CYCLE, 504.0, 504.0)


def test_transfusion_rules():
    assert parse_transfusion_rule("PLT<10:1 unit") == ("PLT", 10.0, 1.0)
    assert parse_transfusion_rule(" hgb < 7 : 2 units") == ("HGB", 7.0, 2.0)
    for bad in ("PLT<10", "PLT>10:1 unit", "PLT<0:1 unit", "XYZ<3:1 unit", "PLT<10:-1 units"):
        with pytest.raises(PkpdError):
            parse_transfusion_rule(bad)


def test_default_cycle_repeats_the_last_chemotherapy_dose():
    ds = pkpd.read_dataset("data/example.csv").subset([8]).until(7 * 24)
    reg, start = _default_cycle(pkpd.load_model("kloft2006_docetaxel_filgrastim"), ds, 504.0)
    assert start == 504.0 and str(reg) == "docetaxel 191 mg 1h infusion @3w"
    full = pkpd.read_dataset("data/example.csv").subset([8])  # two cycles: the second (504 h) repeats at 1008 h
    assert _default_cycle(pkpd.load_model(CARD), full, 504.0)[1] == 1008.0


@pytest.fixture(scope="module")
def planned():
    patient = pkpd.read_dataset("data/example.csv").subset([8]).until(7 * 24)
    return pkpd.plan(CARD, patient, ["none", "dose 70%", "delay 7d"], method="laplace", draws=200, seed=1)


def test_endpoints_equal_a_recomputation_from_the_trajectories(planned):
    """P(grade 4) = share of draws whose hourly course after the cycle start dips below 0.5 (the
    planner's nadir is refined between grid points: agreement within 2 draws), the expected
    grade-4 days = mean time below 0.5 by the trapezoid-crossing rule, readiness = share of draws
    with ANC >= 1.5 at the cycle start + 21 d; differences are paired means against plan 1."""
    fc = planned.forecast
    t = fc.time_h
    table = planned.table
    y_all = fc.lineage_trajectories["ANC"][:, 0]
    values = {}
    for r, name in enumerate(planned.plans):
        a = fc.after[0, r]
        y = y_all[:, r, :]
        after = t >= a
        g4 = (y[:, after].min(axis=1) < 0.5).astype(float)
        below = np.array([_hours_below(t[after], row[after], 0.5) for row in y]) / 24.0
        ready = (np.array([np.interp(a + 504.0, t, row) for row in y]) >= 1.5).astype(float)
        rows = table[table["plan"] == name].set_index("endpoint")
        assert abs(rows.loc["P(grade 4 neutropenia)", "value"] - g4.mean()) <= 2 / len(g4)
        np.testing.assert_allclose(rows.loc["days of grade 4 neutropenia", "value"], below.mean(), rtol=2e-3,
                                   atol=1e-3)
        assert rows.loc["P(ready: ANC >= 1.5)", "value"] == pytest.approx(ready.mean())
        values[name] = (rows, below)
    ref_rows, ref_below = values["none"]
    for name in planned.plans[1:]:
        rows, below = values[name]
        assert rows.loc["P(grade 4 neutropenia)", "difference"] == pytest.approx(
            rows.loc["P(grade 4 neutropenia)", "value"] - ref_rows.loc["P(grade 4 neutropenia)", "value"])
        d = below - ref_below
        lo, hi = np.quantile(d, [0.05, 0.95])
        assert rows.loc["days of grade 4 neutropenia", "difference_lo"] == pytest.approx(lo, rel=2e-2, abs=2e-3)
        assert rows.loc["days of grade 4 neutropenia", "difference_hi"] == pytest.approx(hi, rel=2e-2, abs=2e-3)
    # a 30% lower dose is better on grade 4 for this patient, with certainty on most draws
    low = values["dose 70%"][0]
    assert low.loc["P(grade 4 neutropenia)", "difference"] < -0.3
    assert low.loc["days of grade 4 neutropenia", "p_better"] > 0.9


def _hours_below(t, y, level):
    """Time below ``level`` with linear interpolation of each crossing (independent of pkpd)."""
    total = 0.0
    for k in range(len(t) - 1):
        a, b = y[k] - level, y[k + 1] - level
        dt = t[k + 1] - t[k]
        if a < 0 and b < 0:
            total += dt
        elif a < 0 <= b:
            total += dt * a / (a - b)
        elif b < 0 <= a:
            total += dt * b / (b - a)
    return total


def test_json_is_valid_and_the_validator_catches_errors(planned, tmp_path):
    obj = planned.to_json(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text()) == obj
    validate_plan_json(obj)
    assert [p["plan"] for p in obj["plans"]] == ["none", "dose 70%", "delay 7d"]
    first = [e for e in obj["endpoints"] if e["plan"] == "none"]
    assert all(e["difference"] is None and e["p_better"] is None for e in first)
    for mutate, message in [
        (lambda o: o["endpoints"][0].update(value=1.5), "probability"),
        (lambda o: o["endpoints"][0].update(plan="other"), "not one of the plans"),
        (lambda o: o["endpoints"][0].pop("mcse"), "missing key"),
        (lambda o: o.update(cycle_length_h=0.0), "exclusive minimum"),
    ]:
        bad = json.loads(json.dumps(obj))
        mutate(bad)
        with pytest.raises(ValueError, match=message):
            validate_plan_json(bad)
    planned.plot(tmp_path / "plan.png")
    assert (tmp_path / "plan.png").stat().st_size > 10_000


def test_readiness_beyond_the_horizon_is_not_available():
    """With a 14-day horizon after the last planned dose, the delayed plan's readiness day (its start
    + 21 d) lies beyond the grid: no readiness row for it (the other plan keeps its own), n/a in the text."""
    short = pkpd.plan(CARD, pkpd.read_dataset("data/example.csv").subset([8]).until(7 * 24), ["none", "delay 7d"],
                      horizon="14d", method="laplace", draws=50, seed=1)
    ready = short.table[short.table["endpoint"].str.startswith("P(ready")]
    assert list(ready["plan"]) == ["none"]
    line = next(x for x in short.text().splitlines() if "P(ready" in x)
    assert line.rstrip().endswith("n/a")


def test_plan_errors():
    patient = pkpd.read_dataset("data/example.csv").subset([8]).until(7 * 24)
    with pytest.raises(PkpdError, match="at least one option"):
        pkpd.plan(CARD, patient, [])
    with pytest.raises(PkpdError, match="must differ"):
        pkpd.plan(CARD, patient, ["none", "none"])
    with pytest.raises(PkpdError, match="does not forecast"):
        pkpd.plan(CARD, patient, ["none"], transfuse=["PLT<10:1 unit"], method="laplace", draws=20)
    with pytest.raises(PkpdError, match="one patient"):
        pkpd.plan(CARD, pkpd.read_dataset("data/example.csv"), ["none"])


def test_cli_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "--prior", CARD, "--data", "data/example.csv", "--ids", "8", "--until", "7d",
               "--option", "none", "--option", "dose 80%", "--method", "laplace", "--draws", "50",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "P(grade 4 neutropenia)" in text and "[2] dose 80%" in text
    validate_plan_json(json.loads(out.read_text()))
    rc = main(["plan", "--prior", CARD, "--data", "data/example.csv", "--ids", "8", "--option", "dose 0%"])
    assert rc == 2 and "(0, 200]" in capsys.readouterr().err
