"""Lineage-specific forecast endpoints against hand-computed series (pkpd.forecasting.lineage_endpoints)."""

import numpy as np
import pytest

from pkpd.forecasting.lineage_endpoints import lineage_endpoints, rise_within
from pkpd.reporting.forecast import _LINEAGE_ENTRY, _check

T = np.arange(0.0, 40 * 24 + 1, 1.0)  # hourly, 40 days


def vee(low, top=200.0, t_low=10 * 24.0, half=5 * 24.0):
    """Linear fall from ``top`` to ``low`` over ``half`` hours before ``t_low`` and back up after."""
    return np.clip(low + (top - low) * np.abs(T - t_low) / half, low, top)


def test_platelet_time_below_bounds_and_daily_transfusion_risk():
    y = np.stack([vee(10.0), vee(30.0)])
    out = lineage_endpoints(T, y, "PLT", after=0.0)
    # a V from 200 to `low` over 120 h spends 2 * 120 * (b - low) / (200 - low) hours below b
    below = lambda low, b: 2 * 120 * max(b - low, 0) / (200 - low)  # noqa: E731
    for bound in (50.0, 25.0):
        want = [below(10, bound), below(30, bound)]
        assert out["time_below_h"][repr(bound)]["mean"] == pytest.approx(np.mean(want), rel=1e-9)
        assert out["time_below_h"][repr(bound)]["median"] == pytest.approx(np.median(want), rel=1e-9)
    days = np.asarray(out["p_below_by_day"]["time_h"])
    assert days[0] == 0.0 and np.all(np.diff(days) == 24.0)
    p20 = np.asarray(out["p_below_by_day"]["20.0"])
    # only the first draw dips below 20, on day 10 only (at 9 and 11 days it is 10 + 190 * 24/120 = 48)
    assert p20[10] == 0.5 and p20.sum() == 0.5
    assert "esa" not in out
    _check({**_minimal_entry(), **out}, _LINEAGE_ENTRY, "$")


def test_platelet_engraftment_honours_the_transfusion_free_window():
    y = np.stack([vee(5.0)])  # >= 20 again from day 10 + 120 * 15/195 h = day 10.4: days 11, 12, 13 -> day 11
    assert lineage_endpoints(T, y, "PLT")["engraftment_day"]["median"] == 11.0
    # a platelet transfusion on day 8 blocks first days 11..15 (within 7 days before); engraftment on day 16
    late = lineage_endpoints(T, y, "PLT", transfusions=[8 * 24.0])["engraftment_day"]
    assert late["median"] == 16.0 and late["p_not_engrafted"] == 0.0


def test_haemoglobin_esa_rules():
    slow = 9.0 + 0.05 * T / 24  # +0.7 g/dL per 14 days
    fast = 9.0 + 0.08 * T / 24  # +1.12 g/dL per 14 days
    bump = 9.0 + np.clip(1.2 - np.abs(T - 192.0) / 120.0 * 1.2, 0, None)  # up 1.2 and down within 10 days
    assert rise_within(T, slow, 336.0) == pytest.approx(0.7, abs=1e-9)
    assert rise_within(T, fast, 336.0) == pytest.approx(1.12, abs=1e-9)
    assert rise_within(T, bump, 336.0) == pytest.approx(1.2, abs=1e-9)
    out = lineage_endpoints(T, np.stack([slow, fast, bump]), "HGB", after=48.0)
    esa = out["esa"]
    assert esa["p_rise_gt_1_in_2w"] == pytest.approx(2 / 3)
    # Hb > 12 only on the fast course: 9 + 0.08 d > 12 after day 37.5
    assert esa["p_above_12"] == pytest.approx(1 / 3)
    # time from the start (48 h) to Hb >= 10: slow at day 20, fast at day 12.5, the bump at 192 - 120 * 0.2/1.2 = 172 h
    to10 = esa["time_to_h"]["10.0"]
    assert to10["median"] == pytest.approx(12.5 * 24 - 48.0, abs=1e-6)
    # 5% quantile of (124, 252, 432) h: one tenth of the way from the first to the second
    assert to10["lo"] == pytest.approx(124.0 + 0.1 * (252.0 - 124.0), abs=1e-6)
    assert to10["p_not_reached"] == 0.0
    t11 = esa["time_to_h"]["11.0"]
    assert t11["p_not_reached"] == pytest.approx(1 / 3)  # the bump never reaches 11
    assert "8.0" in out["time_below_h"] and "engraftment_day" not in out
    _check({**_minimal_entry(), **out}, _LINEAGE_ENTRY, "$")


def _minimal_entry():
    num = {"median": 1.0, "lo": 0.5, "hi": 2.0}
    return {"id": "1", "regimen": "r", "lineage": "X", "nadir": {**num, "time_h": num},
            "p_grade": {"3": 0.1, "4": 0.0}, "grade4_duration_h": {"mean": 0.0, "median": 0.0},
            "recovery_h": {"baseline": {"median": None, "lo": None, "hi": None, "p_not_recovered": 1.0}},
            "p_ready": [], "trajectory": {"time_h": [0.0], "median": [1.0], "lo": [1.0], "hi": [1.0]}}
