"""The lineage table (CTCAE v5 cut-offs, thresholds, engraftment, baselines) and per-lineage forecasts."""

from __future__ import annotations

import copy
import dataclasses
from types import MappingProxyType

import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.errors import PkpdError
from pkpd.forecasting.endpoints import (
    CTCAE_THRESHOLDS,
    ctcae_grade,
    engraftment_day,
    grade_thresholds,
    recovery_time,
)
from pkpd.forecasting.lineage import (
    GENERIC_BASELINE_PARAMETERS,
    LINEAGES,
    Engraftment,
    Lineage,
    baseline_parameter,
    get_lineage,
    model_lineages,
)
from pkpd.model.pd.base import PDSystem
from pkpd.reporting.forecast import validate_forecast_json
from pkpd.units import canonical_unit


# ----------------------------------------------------------------------------- the table
def test_table_holds_the_four_lineages_in_canonical_units():
    assert set(LINEAGES) == {"ANC", "PLT", "HGB", "WBC"}
    for name, lin in LINEAGES.items():
        assert lin.name == name
        assert lin.unit == canonical_unit(name)  # the unit registry's canonical unit
    with pytest.raises(TypeError):
        LINEAGES["ANC"] = LINEAGES["PLT"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        LINEAGES["ANC"].readiness = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "name, bounds",
    [
        # MODELS.md 6.1 (CTCAE v5.0); grade 1 is the default LLN
        ("ANC", {1: 2.0, 2: 1.5, 3: 1.0, 4: 0.5}),
        ("PLT", {1: 150.0, 2: 75.0, 3: 50.0, 4: 25.0}),
        ("WBC", {1: 4.0, 2: 3.0, 3: 2.0, 4: 1.0}),
        ("HGB", {1: 12.0, 2: 10.0, 3: 8.0}),  # no grade 4 from a value
    ],
)
def test_ctcae_cut_offs(name, bounds):
    lin = LINEAGES[name]
    assert dict(lin.grades) == bounds
    assert lin.lln == bounds[1]
    assert lin.max_grade == max(bounds)
    # endpoints read the same table
    assert dict(CTCAE_THRESHOLDS[name]) == bounds
    assert grade_thresholds(name) == bounds
    assert grade_thresholds(name.lower(), lln=1.8)[1] == 1.8


def test_recovery_readiness_transfusion_and_engraftment_defaults():
    anc, plt, hgb, wbc = (LINEAGES[k] for k in ("ANC", "PLT", "HGB", "WBC"))
    assert (anc.recovery, plt.recovery, hgb.recovery, wbc.recovery) == ((1.0, 1.5), (100.0, 75.0), (10.0,), (3.0,))
    assert (anc.readiness, plt.readiness, hgb.readiness, wbc.readiness) == (1.5, 100.0, None, None)
    assert (anc.transfusion, plt.transfusion, hgb.transfusion, wbc.transfusion) == ((), (10.0, 20.0), (7.0, 8.0), ())
    # MODELS.md 6.3 (ASTCT): ANC >= 0.5 on 3 consecutive days; PLT >= 20 on 3 consecutive days,
    # no platelet transfusion in the 7 days before
    assert anc.engraftment == Engraftment(threshold=0.5, consecutive_days=3, transfusion_free_days=0)
    assert plt.engraftment == Engraftment(threshold=20.0, consecutive_days=3, transfusion_free_days=7)
    assert hgb.engraftment is None and wbc.engraftment is None


def test_lineage_records_validate_their_values():
    with pytest.raises(PkpdError, match="decrease with the grade"):
        Lineage("X", "x", "10^9/L", "x decreased", grade_bounds=((1, 1.0), (2, 2.0)))
    with pytest.raises(PkpdError, match="grades 1..4"):
        Lineage("X", "x", "10^9/L", "x decreased", grade_bounds=((1, 2.0), (5, 1.0)))
    with pytest.raises(PkpdError, match="threshold must be > 0"):
        Engraftment(threshold=0.0)
    with pytest.raises(PkpdError, match=r"unknown lineage 'GCSF'.*ANC, PLT, HGB, WBC"):
        get_lineage("GCSF")
    assert get_lineage("plt") is LINEAGES["PLT"]
    assert model_lineages(("CONC", "ANC", "GCSF", "PLT")) == ("ANC", "PLT")


# ----------------------------------------------------------------------------- grading (MODELS.md 9 case 7)
@pytest.mark.parametrize(
    "lineage, value, lln, grade",
    [
        ("ANC", 0.49, None, 4),
        ("ANC", 0.5, None, 3),
        ("ANC", 0.99, None, 3),
        ("ANC", 1.0, None, 2),
        ("ANC", 1.49, None, 2),
        ("ANC", 1.5, 2.0, 1),
        ("PLT", 24.9, None, 4),
        ("PLT", 25.0, None, 3),
        ("PLT", 74.9, None, 2),
        ("HGB", 7.9, None, 3),
        ("HGB", 8.0, None, 2),
        ("HGB", 9.99, None, 2),
    ],
)
def test_models_md_case_7_grades(lineage, value, lln, grade):
    assert ctcae_grade(value, lineage, lln=lln) == grade
    # the same grade straight from the table: the highest g with value < bound_g
    bounds = dict(get_lineage(lineage).grades)
    if lln is not None:
        bounds[1] = lln
    assert max([g for g, b in bounds.items() if value < b], default=0) == grade


# ----------------------------------------------------------------------------- engraftment
def test_platelet_engraftment_needs_seven_transfusion_free_days():
    days = np.arange(0.0, 25.0)
    plt = np.full(days.size, 30.0)
    plt[3:12] = [15, 8, 5, 4, 9, 14, 18, 25, 26]  # nadir on day 6; >= 20 from day 10 on
    assert engraftment_day(days, plt, unit="d", lineage="PLT") == 10.0
    # a transfusion on day 5 is within the 7 days before day 10: the first engraftment day is day 13
    assert engraftment_day(days, plt, unit="d", lineage="PLT", transfusions=[5.0]) == 13.0
    # hours: the same transfusion at 120 h on an hourly grid
    th = np.arange(0.0, 24 * 24 + 1.0)
    plt_h = np.interp(th, days * 24.0, plt)
    assert engraftment_day(th, plt_h, lineage="PLT", transfusions=[120.0]) == 13.0
    # without the 7-day condition the transfusion only blocks the days it falls in
    assert engraftment_day(days, plt, unit="d", lineage="PLT", transfusions=[5.0], transfusion_free_days=0) == 10.0
    # neutrophils: defaults unchanged (0.5, 3 days, no transfusion condition)
    anc = plt / 40.0  # >= 0.5 from day 10 on
    assert engraftment_day(days, anc, unit="d") == 10.0
    with pytest.raises(PkpdError, match="no engraftment definition"):
        engraftment_day(days, plt / 3.0, unit="d", lineage="HGB")
    with pytest.raises(PkpdError, match="transfusions"):
        engraftment_day(days, plt, unit="d", lineage="PLT", transfusions=[np.nan])


# ----------------------------------------------------------------------------- baselines
@dataclasses.dataclass
class _ModelLike:
    """What :func:`baseline_parameter` reads from a model (parameter names, outputs, optional mapping)."""

    parameter_names: tuple
    outputs: tuple
    baseline_parameters: dict | None = None


def test_baseline_parameter_lookup():
    kloft = pkpd.load_model("kloft2006_docetaxel")
    assert baseline_parameter(kloft, "ANC") == "Circ0"  # Friberg card: its Circ0
    assert GENERIC_BASELINE_PARAMETERS == ("Circ0", "BASE")
    turnover = _ModelLike(("CL", "V1", "BASE", "KOUT"), ("PLT",))
    assert baseline_parameter(turnover, "PLT") == "BASE"
    # two count outputs: a generic name is ambiguous, the lineage's own name is not
    two = _ModelLike(("Circ0", "MTT", "PLT0"), ("ANC", "PLT"))
    assert baseline_parameter(two, "PLT") == "PLT0"
    assert baseline_parameter(two, "ANC") is None
    # the model's own declaration wins
    declared = _ModelLike(("Circ0", "MTT", "PLT0"), ("ANC", "PLT"), {"ANC": "Circ0", "PLT": None})
    assert baseline_parameter(declared, "ANC") == "Circ0"
    assert baseline_parameter(declared, "PLT") is None
    with pytest.raises(PkpdError, match="declares 'ANC_base'"):
        baseline_parameter(_ModelLike(("Circ0",), ("ANC",), {"ANC": "ANC_base"}), "ANC")


# ----------------------------------------------------------------------------- per-lineage forecasts
class TwoLineages(PDSystem):
    """Neutrophils and platelets: two Friberg chains (3 transits, linear drug effect) on one concentration.

    Declares its baselines (``Circ0`` for ANC would be ambiguous in a two-lineage model).
    """

    baseline_parameters = MappingProxyType({"ANC": "Circ0", "PLT": "PLT0"})

    @property
    def parameter_names(self):
        return ("Circ0", "MTT", "gamma", "slope", "PLT0", "MTTP", "gammaP", "slopeP")

    @property
    def state_names(self):
        return tuple(f"{s}{k}" for k in ("N", "P") for s in ("Prol", "T1", "T2", "T3", "Circ"))

    @property
    def outputs(self):
        return ("ANC", "PLT")

    def initial_state(self, theta):
        return jnp.concatenate([jnp.full((5,), theta["Circ0"]), jnp.full((5,), theta["PLT0"])])

    def vector_field(self, t, y, theta, conc, dose_input):
        def chain(x, base, mtt, gamma, slope):
            ktr = 4.0 / mtt
            feedback = (base / jnp.maximum(x[4], 1e-6)) ** gamma
            prol = ktr * x[0] * (1.0 - slope * jnp.maximum(conc, 0.0)) * feedback - ktr * x[0]
            return jnp.concatenate([prol[None], ktr * (x[:4] - x[1:])])

        return jnp.concatenate([chain(y[:5], theta["Circ0"], theta["MTT"], theta["gamma"], theta["slope"]),
                                chain(y[5:], theta["PLT0"], theta["MTTP"], theta["gammaP"], theta["slopeP"])])

    def observe(self, y, theta):
        return {"ANC": y[..., 4], "PLT": y[..., 9]}


CARD = f"""
name = "two_lineages"
title = "Neutrophils and platelets (test of per-lineage forecasts)"
drug = "hypothetical"
outputs = ["ANC", "PLT"]
[reference]
authors = "pkpd tests"
year = 2026
title = "Per-lineage forecasts"
journal = "none"
reliability = "D"
notes = "Made-up values for a structural test; no publication."
[pk]
driver = "closed_form"
model = "1cmt"
absorption = false
dose_unit = "mg"
concentration_unit = "mg/L"
[pk.parameters]
CL = {{ value = 10.0, unit = "L/h" }}
V1 = {{ value = 20.0, unit = "L" }}
[pd]
system = "{__name__}:TwoLineages"
concentration_unit = "mg/L"
[pd.parameters]
Circ0 = {{ value = 5.0, unit = "10^9/L", iiv = 0.3, iiv_form = "omega" }}
MTT = {{ value = 90.0, unit = "h", iiv = 0.15, iiv_form = "omega" }}
gamma = {{ value = 0.16, unit = "1" }}
slope = {{ value = 8.0, unit = "L/mg", iiv = 0.3, iiv_form = "omega" }}
PLT0 = {{ value = 250.0, unit = "10^9/L", iiv = 0.3, iiv_form = "omega" }}
MTTP = {{ value = 120.0, unit = "h" }}
gammaP = {{ value = 0.3, unit = "1" }}
slopeP = {{ value = 10.0, unit = "L/mg", iiv = 0.3, iiv_form = "omega" }}
[error.ANC]
model = "log_additive"
sd = 0.2
[error.PLT]
model = "log_additive"
sd = 0.15
"""


@pytest.fixture(scope="module")
def two_lineage_forecast(tmp_path_factory):
    path = tmp_path_factory.mktemp("cards") / "two_lineages.toml"
    path.write_text(CARD)
    model = pkpd.load_model(str(path))
    days = np.arange(0.0, 8 * 24, 24.0)
    sim = pkpd.simulate(model, "100 mg 1h", 1, seed=3, times=days)
    data = pkpd.read_dataset(sim.drop(columns="IPRED"))
    fc = pkpd.forecast(model, data, "100 mg 1h @504h", method="laplace", draws=100, seed=0)
    return model, fc


def test_forecast_of_two_lineages(two_lineage_forecast):
    model, fc = two_lineage_forecast
    assert model.outputs == ("ANC", "PLT")
    assert fc.lineages == ("ANC", "PLT") and fc.lineage == "ANC"  # default: every count output, ANC primary
    obj = fc.to_json()
    validate_forecast_json(obj)
    # the top level keeps exactly the single-lineage (ANC) shape ...
    assert list(obj) == ["model", "prior", "interval", "horizon_h", "patients", "lineages"]
    anc_keys = ["id", "regimen", "lineage", "nadir", "p_grade", "grade4_duration_h", "recovery_h", "p_ready",
                "trajectory"]
    for e in obj["patients"]:
        assert list(e) == anc_keys and e["lineage"] == "ANC"
        assert set(e["recovery_h"]) == {"1.0", "1.5", "baseline"}
        assert [r["threshold"] for r in e["p_ready"]] == [1.5]
    # ... and "lineages" has one entry per forecast output with that lineage's endpoints
    by = {lin["lineage"]: lin for lin in obj["lineages"]}
    assert list(by) == ["ANC", "PLT"]
    # the lineage entries are the top-level ones plus the lineage-specific endpoints
    extra = {"time_below_h", "p_below_by_day", "engraftment_day", "esa"}
    assert [{k: v for k, v in e.items() if k not in extra} for e in by["ANC"]["patients"]] == obj["patients"]
    plt = by["PLT"]
    assert plt["unit"] == "10^9/L" and plt["grades"] == {"1": 150.0, "2": 75.0, "3": 50.0, "4": 25.0}
    assert by["ANC"]["baseline_parameter"] == "Circ0" and plt["baseline_parameter"] == "PLT0"  # declared
    assert len(plt["patients"]) == 1  # one patient, one regimen
    e = plt["patients"][0]
    assert e["lineage"] == "PLT" and e["regimen"] == fc.regimens[0] == obj["patients"][0]["regimen"]
    assert set(e["recovery_h"]) == {"100.0", "75.0", "baseline"}
    assert [(r["time_h"], r["threshold"]) for r in e["p_ready"]] == [(1008.0, 100.0)]  # 504 h after the cycle start
    assert set(e["p_transfusion"]) == {"10.0", "20.0"}
    # the PLT endpoints are those of the PLT trajectories in the forecast cycle (t >= 504 h)
    y = fc.lineage_trajectories["PLT"][:, 0, 0, :]
    window = fc.time_h >= 504.0
    nadirs = y[:, window].min(axis=1)
    assert e["nadir"]["median"] == pytest.approx(np.median(nadirs))
    assert e["p_grade"]["3"] == pytest.approx(np.mean(nadirs < 50.0))
    assert e["p_grade"]["4"] == pytest.approx(np.mean(nadirs < 25.0))
    assert e["p_transfusion"]["20.0"] == pytest.approx(np.mean(nadirs < 20.0))
    assert e["p_transfusion"]["10.0"] == pytest.approx(np.mean(nadirs < 10.0))
    assert e["nadir"]["median"] < 0.8 * 250.0  # the drug lowers platelets ...
    assert 0.0 < e["p_grade"]["4"] < 1.0  # ... to an uncertain grade 4 (the checks above can fail)
    assert e["p_transfusion"]["10.0"] <= e["p_transfusion"]["20.0"] <= e["p_grade"]["4"]
    # recovery to baseline uses each draw's own PLT0
    base = fc.draws["PLT0"].to_numpy()
    rec = recovery_time(fc.time_h, y, base, after=504.0)
    assert e["recovery_h"]["baseline"]["p_not_recovered"] == pytest.approx(np.mean(np.isnan(rec)))
    # the ANC entry comes from the ANC trajectories
    anc = fc.lineage_trajectories["ANC"][:, 0, 0, :]
    np.testing.assert_array_equal(anc, fc.trajectories[:, 0, 0, :])
    assert obj["patients"][0]["nadir"]["median"] == pytest.approx(np.median(anc[:, window].min(axis=1)))
    assert fc.table(lineage="PLT")["p_grade4"][0] == pytest.approx(e["p_grade"]["4"])
    pp = fc.predictive(7 * 24, lineage="PLT")
    assert pp.shape == (100, 1, 1) and np.all(pp > 0)


def test_forecast_lineage_errors_and_readiness(two_lineage_forecast):
    from pkpd.forecasting import forecast as fmod

    model, fc = two_lineage_forecast
    with pytest.raises(PkpdError, match="'WBC' is not an output"):
        fmod._forecast_lineages(model, "WBC")
    with pytest.raises(PkpdError, match="each lineage may be given once"):
        fmod._forecast_lineages(model, ["PLT", "PLT"])
    assert fmod._forecast_lineages(model, ["PLT"]) == ("PLT",)
    with pytest.raises(PkpdError, match="not forecast"):
        fc.plot("x.png", lineage="WBC")
    # readiness: table defaults; a sequence for the primary lineage (the others at the same hours);
    # a dict for full control
    assert fmod._ready_checks(None, ("ANC", "PLT"), "ANC") == {"ANC": ((504.0, 1.5),), "PLT": ((504.0, 100.0),)}
    assert fmod._ready_checks([(336, 1.0)], ("ANC", "PLT"), "ANC") == {"ANC": ((336.0, 1.0),),
                                                                       "PLT": ((336.0, 100.0),)}
    assert fmod._ready_checks((), ("ANC", "PLT"), "ANC") == {"ANC": (), "PLT": ()}
    assert fmod._ready_checks({"PLT": [(400, 50)]}, ("ANC", "PLT"), "ANC") == {"ANC": (), "PLT": ((400.0, 50.0),)}
    with pytest.raises(PkpdError, match=r"ready: lineage\(s\) \['HGB'\]"):
        fmod._ready_checks({"HGB": [(400, 9)]}, ("ANC", "PLT"), "ANC")
    with pytest.raises(PkpdError, match="pair"):
        fmod._ready_checks([504.0], ("ANC",), "ANC")


def test_primary_lineage_keeps_the_legacy_shape(two_lineage_forecast):
    """A forecast whose primary lineage has extra endpoints (PLT) keeps the top level in the single-lineage shape."""
    _, fc = two_lineage_forecast
    ctx = dict(fc._context)
    ctx["lineages"], ctx["primary"] = ("PLT",), "PLT"
    ctx["ready"] = {"PLT": ((504.0, 100.0),)}
    from pkpd.forecasting.forecast import _project, _regimens

    plt_first = _project(ctx, _regimens("100 mg 1h @504h", None), fc.diagnostics)
    obj = plt_first.to_json()
    validate_forecast_json(obj)
    assert plt_first.lineage == "PLT" and [lin["lineage"] for lin in obj["lineages"]] == ["PLT"]
    assert "p_transfusion" not in obj["patients"][0] and obj["patients"][0]["lineage"] == "PLT"
    assert "p_transfusion" in obj["lineages"][0]["patients"][0]
    bad = copy.deepcopy(obj)
    bad["lineages"][0]["patients"][0]["lineage"] = "ANC"
    with pytest.raises(ValueError, match=r"lineages\[0\]\.patients\[0\]\.lineage"):
        validate_forecast_json(bad)
