"""Clinical endpoints on hand-computable trajectories (CTCAE v5, DDMODEL00000224, ASTCT)."""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.forecasting.endpoints import (
    CTCAE_THRESHOLDS,
    ctcae_grade,
    engraftment_day,
    first_crossing,
    grade_probability,
    interpolate_at,
    nadir,
    probability,
    recovery_time,
    summarise,
    time_below,
)
from pkpd.errors import PkpdError


# ----------------------------------------------------------------------------- CTCAE
@pytest.mark.parametrize(
    "lineage, value, grade",
    [
        # MODELS.md §9 item 7 and the CTCAE v5 table (bounds are strict: "<0.5" is G4)
        ("ANC", 0.49, 4),
        ("ANC", 0.5, 3),
        ("ANC", 0.99, 3),
        ("ANC", 1.0, 2),
        ("ANC", 1.49, 2),
        ("ANC", 1.5, 1),
        ("ANC", 1.99, 1),
        ("ANC", 2.0, 0),
        ("PLT", 24.9, 4),
        ("PLT", 25.0, 3),
        ("PLT", 49.9, 3),
        ("PLT", 50.0, 2),
        ("PLT", 74.9, 2),
        ("PLT", 75.0, 1),
        ("PLT", 150.0, 0),
        ("WBC", 0.99, 4),
        ("WBC", 1.0, 3),
        ("WBC", 2.0, 2),
        ("WBC", 3.0, 1),
        ("HGB", 7.9, 3),
        ("HGB", 8.0, 2),
        ("HGB", 9.99, 2),
        ("HGB", 10.0, 1),
        ("HGB", 12.0, 0),
        ("HGB", 3.0, 3),  # grade 4 anaemia is clinical, never assigned from a value
    ],
)
def test_ctcae_boundaries(lineage, value, grade):
    assert ctcae_grade(value, lineage) == grade


def test_ctcae_lln_and_custom_thresholds():
    assert ctcae_grade(1.5, "ANC", lln=2.0) == 1
    assert ctcae_grade(1.6, "ANC", lln=1.5) == 0
    # LLN below the grade-2 bound: grade 2 must not be lost
    assert ctcae_grade(1.45, "ANC", lln=1.4) == 2
    assert ctcae_grade(0.6, "ANC", thresholds={4: 0.7}) == 4
    assert ctcae_grade(130, "PLT", lln=140) == 1
    assert CTCAE_THRESHOLDS["ANC"][4] == 0.5  # defaults untouched by overrides


def test_ctcae_vectorised_and_nan():
    v = np.array([[0.4, 0.7, 1.2], [1.7, 2.5, np.nan]])
    np.testing.assert_array_equal(ctcae_grade(v), [[4, 3, 2], [1, 0, -1]])
    with pytest.raises(PkpdError):
        ctcae_grade(1.0, "XYZ")


def test_ctcae_thresholds_read_only():
    with pytest.raises(TypeError):
        CTCAE_THRESHOLDS["ANC"][4] = 0.1  # type: ignore[index]


# ----------------------------------------------------------------------------- nadir
def test_nadir_parabola_exact_on_quadratic():
    t = np.linspace(0.0, 10.0, 7)  # spacing 5/3; the vertex 3.3 is not a grid point
    y = 2.0 * (t - 3.3) ** 2 + 1.0
    value, time = nadir(t, y)
    assert time == pytest.approx(3.3, abs=1e-12)
    assert value == pytest.approx(y.min())  # grid minimum, not the vertex value
    _, t_grid = nadir(t, y, refine=False)
    assert t_grid == pytest.approx(t[np.argmin(y)])


def test_nadir_parabola_nonuniform_grid():
    t = np.array([0.0, 1.0, 2.5, 3.0, 7.0, 9.0])
    y = (t - 2.8) ** 2
    assert nadir(t, y)[1] == pytest.approx(2.8, abs=1e-12)


def test_nadir_after_window_and_edges():
    t = np.arange(0.0, 11.0)
    y = np.array([0.1, 3, 2, 1, 0.5, 0.8, 1.5, 2, 2.5, 3, 3.5])
    # the pre-dose low at t = 0 is skipped with after = 1
    v, tm = nadir(t, y, after=1.0, refine=False)
    assert (v, tm) == (0.5, 4.0)
    v, tm = nadir(t, y)
    assert (v, tm) == (0.1, 0.0)  # boundary minimum: no refinement
    # minimum at the window start (neighbour outside the window): not refined
    v, tm = nadir(t, y, after=4.0)
    assert (v, tm) == (0.5, 4.0)
    # monotone decreasing: minimum at the last point
    assert nadir(t, -t)[1] == 10.0
    with pytest.raises(PkpdError):
        nadir(t, y, after=20.0)


def test_nadir_vectorised_shapes():
    t = np.linspace(0, 10, 41)
    centres = np.array([[2.0, 3.0, 4.0], [5.0, 6.0, 7.5]])  # draws × patients
    y = (t - centres[..., None]) ** 2 + centres[..., None]
    v, tm = nadir(t, y)
    assert v.shape == tm.shape == (2, 3)
    np.testing.assert_allclose(tm, centres, atol=1e-12)
    np.testing.assert_allclose(v, centres)
    # per-trajectory window
    v2, tm2 = nadir(t, y, after=np.full((2, 3), 8.0))
    np.testing.assert_allclose(tm2, 8.0)


# ----------------------------------------------------------------------------- crossings
def test_first_crossing_interpolated():
    t = np.array([0.0, 10.0])
    y = np.array([1.0, 0.0])
    assert first_crossing(t, y, 0.5) == pytest.approx(5.0)
    assert np.isnan(first_crossing(t, y, 0.5, direction="up"))
    assert np.isnan(first_crossing(t, y, 2.0))  # never above: never crosses down


def test_first_crossing_piecewise_linear():
    t = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    y = np.array([2.0, 1.0, 0.2, 0.4, 1.2, 2.2])
    # down through 0.5 between t=2 (1.0) and t=4 (0.2): 2 + 2*0.5/0.8
    assert first_crossing(t, y, 0.5) == pytest.approx(3.25)
    # up through 1.0 between t=6 (0.4) and t=8 (1.2): 6 + 2*0.6/0.8
    assert first_crossing(t, y, 1.0, "up") == pytest.approx(7.5)
    # exactly reaching the threshold at a grid point counts as crossing up (>=)
    assert first_crossing(t, y, 1.2, "up") == pytest.approx(8.0)
    # starting at a point with y == threshold then going below: down crossing there
    assert first_crossing(t, y, 1.0, "down") == pytest.approx(2.0)
    # window start and per-trajectory windows
    assert np.isnan(first_crossing(t, y, 0.5, after=3.5))
    yy = np.stack([y, y])
    np.testing.assert_allclose(first_crossing(t, yy, 1.0, "down", after=np.array([0.0, 9.0])), [2.0, np.nan])
    assert first_crossing(t, y, 1.5, "up", start=1.0) == pytest.approx(8.0 + 2.0 * 0.3 / 1.0)


def test_first_crossing_threshold_per_trajectory():
    t = np.array([0.0, 10.0])
    y = np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(first_crossing(t, y, np.array([0.5, 0.2])), [5.0, 8.0])


def test_time_below():
    t = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    y = np.array([2.0, 1.0, 0.2, 0.4, 1.2, 2.2])
    # below 0.5 from 3.25 to 6 + 2*0.1/0.8 = 6.25
    assert time_below(t, y, 0.5) == pytest.approx(3.0)
    # below 1.0 from 2.0 to 7.5
    assert time_below(t, y, 1.0) == pytest.approx(5.5)
    assert time_below(t, y, 0.1) == 0.0
    assert time_below(t, y, 5.0) == pytest.approx(10.0)
    # window clipping with interpolated endpoint values
    assert time_below(t, y, 0.5, start=4.0) == pytest.approx(2.25)
    assert time_below(t, y, 0.5, end=5.0) == pytest.approx(1.75)
    # two separate episodes
    t2 = np.arange(0.0, 7.0)
    y2 = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    assert time_below(t2, y2, 0.5) == pytest.approx(1.0 + 2.0)


def test_time_below_window_and_thresholds_against_fine_sampling():
    """Windows inside, across and beyond the grid, several thresholds at once: the duration equals
    a count of 1e-4 h samples of the piecewise-linear trajectory below the threshold."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.5, 2.0, 30))
    y = rng.uniform(0.0, 2.0, (3, 30))
    fine = np.arange(t[0], t[-1], 1e-4) + 5e-5
    yf = np.stack([np.interp(fine, t, row) for row in y])
    thr = np.array([0.5, 1.0])
    for a, b in ((None, None), (t[3] + 0.3, t[20] - 0.1), (t[5], t[6]), (t[0] - 5, t[2] + 0.01), (t[-1] + 1, None)):
        got = time_below(t, y, thr[:, None], start=a, end=b)
        lo = t[0] if a is None else a
        hi = t[-1] if b is None else b
        w = (fine >= lo) & (fine < hi)
        ref = np.array([[np.sum(yf[i, w] < th) * 1e-4 for i in range(3)] for th in thr])
        assert got.shape == (2, 3)
        np.testing.assert_allclose(got, ref, atol=3e-4)


def test_time_below_vectorised():
    t = np.array([0.0, 10.0])
    y = np.broadcast_to(np.array([1.0, 0.0]), (4, 3, 2))
    d = time_below(t, y, 0.5)
    assert d.shape == (4, 3)
    np.testing.assert_allclose(d, 5.0)


def test_interpolate_at():
    t = np.array([0.0, 10.0, 20.0])
    y = np.array([[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(interpolate_at(t, y, 15.0), [2.0, 1.0])
    np.testing.assert_allclose(interpolate_at(t, y, np.array([20.0, 0.0])), [3.0, 1.0])
    with pytest.raises(PkpdError):
        interpolate_at(t, y, 21.0)


# ----------------------------------------------------------------------------- recovery
def test_recovery_time_after_nadir():
    t = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    y = np.array([2.0, 1.0, 0.2, 0.4, 1.2, 2.2])
    assert recovery_time(t, y, 1.0) == pytest.approx(7.5)
    assert recovery_time(t, y, 2.0) == pytest.approx(8.0 + 2.0 * 0.8 / 1.0)
    # never back to baseline within the grid: not reached
    assert np.isnan(recovery_time(t, y, 3.0))
    # nadir above the threshold: already recovered at the nadir time
    _, tn = nadir(t, y)
    assert recovery_time(t, y, 0.1) == pytest.approx(tn)
    # without the nadir reference: from `after` (already >= at t=0 → t=0; from t=3 → up-crossing)
    assert recovery_time(t, y, 1.0, after_nadir=False) == 0.0
    assert recovery_time(t, y, 1.0, after_nadir=False, after=3.0) == pytest.approx(7.5)


def test_recovery_crossing_before_refined_nadir_time():
    # steep fall, slow rise: the parabola vertex lies after t=1, the crossing at 1.1
    t = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([10.0, 0.0, 1.0, 2.0])
    _, tn = nadir(t, y)
    assert tn > 1.1
    assert recovery_time(t, y, 0.1) == pytest.approx(1.1)


def test_recovery_per_draw_baseline():
    t = np.array([0.0, 10.0, 20.0])
    y = np.array([[4.0, 0.0, 4.0], [5.0, 0.0, 4.0]])
    np.testing.assert_allclose(recovery_time(t, y, np.array([4.0, 5.0])), [20.0, np.nan])


# ----------------------------------------------------------------------------- engraftment
def test_engraftment_three_consecutive_days():
    days = np.arange(0.0, 16.0)
    anc = np.array([3.0, 1.0, 0.6, 0.05, 0.02, 0.01, 0.1, 0.5, 0.3, 0.6, 0.7, 0.9, 1.2, 0.4, 2.0, 2.5])
    # touches 0.5 on day 7, dips on day 8, then >= 0.5 on days 9, 10, 11: day 9
    assert engraftment_day(days, anc, unit="d") == 9.0
    # the same on an hourly grid, sampled at whole days by interpolation
    th = np.arange(0.0, 15 * 24 + 1.0)
    anc_h = np.interp(th, days * 24.0, anc)
    assert engraftment_day(th, anc_h) == 9.0
    # before the nadir the (pre-conditioning) counts do not count
    assert engraftment_day(days, anc, unit="d", after_nadir=False) == 0.0
    # two consecutive days suffice with consecutive=2
    assert engraftment_day(days, anc, unit="d", consecutive=2) == 9.0
    assert engraftment_day(days, anc, unit="d", consecutive=4) == 9.0
    assert np.isnan(engraftment_day(days, anc, unit="d", consecutive=5))
    # never three days in a row: NaN
    short = anc.copy()
    short[[11, 14]] = 0.1
    assert np.isnan(engraftment_day(days, short, unit="d"))


def test_engraftment_vectorised():
    days = np.arange(0.0, 12.0)
    base = np.array([2.0, 0.1, 0.05, 0.2, 0.6, 0.7, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0])
    late = np.roll(base, 3)
    late[:3] = 2.0
    y = np.stack([[base, late], [late, base], [base, base]])  # 3 draws × 2 patients
    e = engraftment_day(days, y, unit="d")
    assert e.shape == (3, 2)
    np.testing.assert_array_equal(e, [[4, 7], [7, 4], [4, 4]])


# ----------------------------------------------------------------------------- summaries
def test_summarise_finite():
    s = summarise(np.arange(101.0))
    assert s == {"median": 50.0, "lo": 5.0, "hi": 95.0, "p_not_reached": 0.0}
    s = summarise(np.arange(101.0), interval=0.5)
    assert (s["lo"], s["hi"]) == (25.0, 75.0)


def test_summarise_not_reached():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])  # one draw not reached: sorts last (+inf)
    s = summarise(x)
    assert s["median"] == 3.0
    assert s["lo"] == pytest.approx(1.2)
    assert s["hi"] is None  # 95% quantile interpolates towards the not-reached draw
    assert s["p_not_reached"] == pytest.approx(0.2)
    s = summarise(np.array([1.0, np.nan, np.nan]))
    assert s["median"] is None and s["hi"] is None and s["lo"] is None
    assert s["p_not_reached"] == pytest.approx(2 / 3)
    # omit mode ignores NaN
    s = summarise(x, nan="omit")
    assert s["median"] == 2.5 and s["hi"] == pytest.approx(3.85)
    # exact order statistic just before a not-reached draw is reached
    assert summarise(np.array([1.0, 2.0, np.nan]))["median"] == 2.0


def test_summarise_vectorised():
    x = np.arange(2 * 3 * 5, dtype=float).reshape(5, 2, 3)
    x[:, 0, 0] = np.nan
    s = summarise(x, axis=0)
    assert s["median"].shape == (2, 3)
    assert np.isnan(s["median"][0, 0]) and s["p_not_reached"][0, 0] == 1.0
    np.testing.assert_allclose(s["median"][1:, :], np.median(x, axis=0)[1:, :])
    s1 = summarise(np.moveaxis(x, 0, 2), axis=2)
    np.testing.assert_allclose(s1["lo"], s["lo"], equal_nan=True)


def test_probability():
    assert probability(np.array([True, False, True, True])) == 0.75
    assert probability(np.array([1.0, 0.0, np.nan])) == 0.5
    np.testing.assert_allclose(probability(np.array([[True, False], [True, True]]), axis=0), [1.0, 0.5])


def test_grade_probability():
    t = np.arange(0.0, 5.0)
    mins = np.array([[0.4, 0.8], [0.45, 1.2], [0.6, 1.8], [1.1, 0.3]])  # draws × patients
    y = 3.0 - (3.0 - mins[..., None]) * np.array([0, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(grade_probability(y, "ANC", 4), [0.5, 0.25])
    np.testing.assert_allclose(grade_probability(y, "ANC", 3), [0.75, 0.5])
    np.testing.assert_allclose(grade_probability(y, "ANC", 3, lln=2.0, thresholds={3: 0.5}), [0.5, 0.25])
    # window excluding the minimum at t = 2
    np.testing.assert_allclose(grade_probability(y, "ANC", 1, t=t, after=3.0), [0.75, 0.5])
    with pytest.raises(PkpdError):
        grade_probability(y, "HGB", 4)
