"""What-if comparisons: paired differences of endpoints across regimens (pkpd.compare_regimens)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import pkpd
from pkpd.cli import main as run_cli
from pkpd.errors import PkpdError
from pkpd.forecasting.compare import compare
from pkpd.reporting.forecast import validate_forecast_json

CARD = "kloft2006_docetaxel"
COV = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
KW = dict(draws=200, warmup=150, seed=1)


def fake_forecast(y, after=(0.0, 0.0), t=None):
    """The attributes compare() reads, around trajectories ``y [draws, regimens, T]`` of one patient."""
    y = np.asarray(y, dtype=float)
    t = np.arange(y.shape[-1], dtype=float) * 24.0 if t is None else t
    return SimpleNamespace(regimens=[f"r{r}" for r in range(y.shape[1])], time_h=t, lineages=("ANC",),
                           lineage_trajectories={"ANC": y[:, None]}, ids=["p1"], after=np.array([after]),
                           interval=0.9)


def test_paired_differences_against_hand_computed_values():
    # three draws, two regimens, daily grid; V-shaped courses with known nadirs
    v = lambda low: [3.0, 2.0, low, 2.0, 3.0]  # noqa: E731
    y = np.array([[v(0.2), v(0.4)], [v(0.3), v(0.3)], [v(0.6), v(1.2)]])
    table = compare(fake_forecast(y)).table.set_index("endpoint")
    nadir = table.loc["nadir"]
    diffs = np.array([0.2, 0.0, 0.6])
    assert nadir["reference_value"] == pytest.approx(0.3) and nadir["alternative_value"] == pytest.approx(0.4)
    assert nadir["difference"] == pytest.approx(np.median(diffs))
    assert nadir["lo"] == pytest.approx(np.quantile(diffs, 0.05)) and nadir["hi"] == pytest.approx(
        np.quantile(diffs, 0.95))
    assert nadir["p_better"] == pytest.approx((2 + 0.5) / 3)  # two better, one tie
    g4 = table.loc["P(grade 4)"]  # nadir < 0.5: reference in draws 1-2, alternative in draws 1-2 too
    assert g4["reference_value"] == pytest.approx(2 / 3) and g4["alternative_value"] == pytest.approx(2 / 3)
    assert g4["difference"] == 0.0 and g4["p_better"] == pytest.approx(0.5) and np.isnan(g4["lo"])
    # time below 0.5 on a linear grid: a V from 2.0 to `low` and back spends 2 * 24 * (0.5 - low) / (2 - low) h
    below = lambda low: 2 * (0.5 - low) / (2.0 - low) if low < 0.5 else 0.0  # noqa: E731
    d = np.array([below(0.4) - below(0.2), 0.0, 0.0])
    row = table.loc["days below 0.5"]
    assert row["difference"] == pytest.approx(np.median(d)) and row["p_better"] == pytest.approx((1 + 1.0) / 3)
    # recovery to 1.5 after the day-2 nadir: the rising crossing at day 2 + (1.5 - low) / (2 - low)
    rec_day = lambda low: 2 + (1.5 - low) / (2.0 - low)  # noqa: E731
    ref, alt = np.array([rec_day(x) for x in (0.2, 0.3, 0.6)]), np.array([rec_day(x) for x in (0.4, 0.3, 1.2)])
    rec = table.loc["days to recovery >= 1.5"]
    assert rec["reference_value"] == pytest.approx(np.median(ref), rel=1e-9)
    assert rec["difference"] == pytest.approx(np.median(alt - ref), rel=1e-9)
    assert rec["p_better"] == pytest.approx(2.5 / 3)


def test_not_recovered_counts_as_worse_and_ties_as_half():
    down = [3.0, 2.0, 1.0, 0.4, 0.3]  # never back to 1.5 within the grid
    up = [3.0, 2.0, 1.0, 2.0, 3.0]
    y = np.array([[down, up], [down, down]])
    rec = compare(fake_forecast(y)).table.set_index("endpoint").loc["days to recovery >= 1.5"]
    assert rec["p_better"] == pytest.approx((1 + 0.5) / 2)
    assert rec["reference_value"] is None or np.isnan(rec["reference_value"])  # median of (inf, inf)


def test_reference_by_name_and_errors():
    y = np.ones((2, 3, 5))
    assert compare(fake_forecast(y, after=(0, 0, 0)), reference="r2").reference == "r2"
    with pytest.raises(PkpdError, match="unknown reference"):
        compare(fake_forecast(y, after=(0, 0, 0)), reference="nope")
    with pytest.raises(PkpdError, match="at least two"):
        compare(fake_forecast(np.ones((2, 1, 5)), after=(0,)))


@pytest.fixture(scope="module")
def patient():
    days = np.arange(0, 10 * 24, 24.0)
    sim = pkpd.simulate(CARD, "100 mg/m2 1h", 1, seed=5, times=days, covariates=COV)
    return sim.drop(columns="IPRED")


def test_compare_regimens_on_the_same_draws(patient):
    ds = pkpd.read_dataset(patient)
    result = pkpd.compare_regimens(CARD, ds, {"full": "100 mg/m2 1h @504h", "reduced": "75 mg/m2 1h @504h"},
                                   method="laplace", **KW)
    table = result.table.set_index("endpoint")
    # the same draw under a lower dose always has a higher nadir: paired, so P(better) is exactly 1
    assert table.loc["nadir", "p_better"] == 1.0
    assert table.loc["nadir", "lo"] > 0
    assert table.loc["days below 0.5", "difference"] <= 0
    fc = result.forecast
    assert fc.regimens == ["full", "reduced"]
    nadirs = [e["nadir"]["median"] for e in fc.entries]
    assert table.loc["nadir", "reference_value"] == pytest.approx(nadirs[0], rel=0.05)
    obj = result.to_json()
    validate_forecast_json(obj)
    assert {r["endpoint"] for r in obj["comparison"]} >= {"nadir", "P(grade 4)"}
    assert "reduced" in result.text() and "P(better)" in result.text()


def test_cli_compare(patient, tmp_path, capsys):
    data = tmp_path / "patient.csv"
    patient.to_csv(data, index=False, na_rep=".")
    out = tmp_path / "cmp.json"
    code = run_cli(["forecast", "--prior", CARD, "--data", str(data), "--method", "laplace", "--draws", "200",
                    "--regimen", "100 mg/m2 1h @504h", "--regimen", "75 mg/m2 1h @504h", "--compare",
                    "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    print(text)
    assert "vs  100 mg/m2 1h infusion @3w" in text and "P(better)" in text
    obj = json.loads(out.read_text())
    validate_forecast_json(obj)
    assert obj["comparison"][0]["reference"] == "100 mg/m2 1h infusion @3w"
    code = run_cli(["forecast", "--prior", CARD, "--data", str(data), "--regimen", "100 mg/m2 1h @504h",
                    "--compare"])
    assert code == 2
    assert "--compare needs at least two --regimen" in capsys.readouterr().err


def test_haemoglobin_comparison_has_the_esa_endpoints():
    t = np.arange(0.0, 40 * 24 + 1, 24.0)
    flat = np.full(t.size, 9.0)
    rising = 9.0 + 0.1 * t / 24  # +1.4 g/dL per 14 days; 10 on day 10, 11 on day 20, above 12 after day 30
    y = np.stack([np.stack([flat, rising]), np.stack([flat, flat])])[:, :, None, :]  # [draws, regimens, 1, T]
    fc = fake_forecast(y[:, :, 0, :], t=t)
    fc.lineages, fc.lineage_trajectories = ("HGB",), {"HGB": y[:, None, :, 0, :]}
    table = compare(fc).table.set_index("endpoint")
    assert table.loc["Hb at the end", "difference"] == pytest.approx(np.median([4.0, 0.0]))
    assert table.loc["Hb at the end", "p_better"] == pytest.approx(0.75)  # one better, one tie
    assert table.loc["P(rise > 1 in 2 weeks)", "alternative_value"] == 0.5
    assert table.loc["P(Hb > 12)", "difference"] == 0.5
    to10 = table.loc["days to Hb >= 10"]
    assert to10["alternative_value"] is None or np.isnan(to10["alternative_value"])  # median of (10 d, never)
    assert to10["p_better"] == pytest.approx(0.75)  # reached vs never, and a tie of two nevers
