"""Several blood products per PD component (``[[pd]] product`` as an array of tables): card
validation, regimen and data doses into each product's state, and the transfusion policy and
planner picking the product by its ``output`` (the whole-marrow card: platelets and red cells)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import pkpd
from pkpd.errors import ModelError
from pkpd.solve.solver import SolverOptions

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "fornari2019_carboplatin_marrow.toml"
PLT_UNIT = 25.0  # 10^9/L per platelet unit (card, [A])
RBC_UNIT = 333.3  # 10^9/L per red-cell unit (card, [A])
MCH = 30.0  # pg (card, fixed)
KCIRC_RBC = 0.00037  # 1/h (card, fixed): first-order loss of circulating red cells
DT = 1.0 / 60.0  # one minute (h)
TIGHT = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000)  # jumps to 1e-9: tighter than the defaults


def _variant(tmp_path, old, new, name="products_test"):
    """The Fornari card with ``old`` replaced by ``new`` (``old`` must occur), saved as ``name``."""
    text = CARD.read_text()
    assert old in text, old
    text = text.replace(old, new).replace('name = "fornari2019_carboplatin_marrow"', f'name = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


RBC_LINE = '{ name = "rbc", target = "RBC", unit_amount = 333.3, output = "HGB",'


@pytest.mark.parametrize("old, new, path", [
    ('{ name = "rbc", target', '{ name = "platelets", target', r"pd\[0\]\.product\[1\]\.name"),
    ('{ name = "rbc", target', '{ name = "carboplatin", target', r"pd\[0\]\.product\[1\]\.name"),
    (RBC_LINE, RBC_LINE.replace('"RBC"', '"Ret"'), r"pd\[0\]\.product\[1\]\.target: expected one of the cmt"),
    (RBC_LINE, RBC_LINE.replace('"RBC"', '"Plt"'), r"pd\[0\]\.product\[1\]\.target: expected one product per"),
    (RBC_LINE, '{ name = "rbc", target = "RBC", unit_amount = 333.3, colour = "red", output = "HGB",',
     r"pd\[0\]\.product\[1\]\.colour: unknown field"),
    (RBC_LINE, RBC_LINE.replace('"HGB"', '"EPO"'), r"pd\[0\]\.product\[1\]\.output: expected an output of"),
    (RBC_LINE, RBC_LINE.replace('"HGB"', '"CONC"'), r"pd\[0\]\.product\[1\]\.output: expected an output of"),
    (RBC_LINE, '{ name = "rbc", target = "RBC", output = "HGB",', r"pd\[0\]\.product\[1\]: expected exactly one of"),
    ("product = [", "product = [ 3, ", r"pd\[0\]\.product: expected a table or a non-empty array"),
])
def test_card_errors_name_the_field_path(tmp_path, old, new, path):
    bad = _variant(tmp_path, old, new)
    with pytest.raises(ModelError, match=path):
        pkpd.load_model(bad)


def test_single_table_form_keeps_its_meaning_and_paths(tmp_path):
    text = CARD.read_text()
    start = text.index("product = [")
    end = text.index("]\n", text.index(RBC_LINE)) + 2
    one = 'product = { name = "platelets", target = "Plt", unit_amount = 25.0 }\n'
    good = _variant(tmp_path, text[start:end], one, "single_product")
    model = pkpd.load_model(good)
    (spec,) = model.card.pds
    assert [(q.name, q.target, q.unit_amount, q.output) for q in spec.products] == [("platelets", "Plt", 25.0, None)]
    inputs, used = model.drug_inputs()
    assert set(inputs) == {"carboplatin", "platelets"} and used == {3: "unit"}
    bad = _variant(tmp_path, text[start:end], one.replace('"Plt"', '"Ret"'), "single_bad")
    with pytest.raises(ModelError, match=r"pd\[0\]\.product\.target: expected one of the cmt targets"):
        pkpd.load_model(bad)
    # without output, the single product serves every output of its component: the policy lookup
    from pkpd.forecasting.policy import _product

    assert _product(model, "PLT") == ("platelets", 3) and _product(model, "HGB") == ("platelets", 3)


def test_fornari_card_declares_both_products():
    model = pkpd.load_model(CARD)
    (spec,) = model.card.pds
    assert [(q.name, q.target, q.unit_amount, q.output) for q in spec.products] == [
        ("platelets", "Plt", PLT_UNIT, "PLT"), ("rbc", "RBC", RBC_UNIT, "HGB")]
    assert all(q.note.startswith("[A]") for q in spec.products)
    inputs, used = model.drug_inputs()
    assert (inputs["platelets"].cmt, inputs["rbc"].cmt) == (3, 4) and used == {3: "unit", 4: "unit"}
    np.testing.assert_array_equal(model.route_factors({3: "unit", 4: "unit"}), [1.0, PLT_UNIT, RBC_UNIT])
    # the packaged copy is the same card
    assert (ROOT / "pkpd" / "_models" / CARD.name).read_text() == CARD.read_text()
    from pkpd.forecasting.policy import _product

    assert _product(model, "HGB") == ("rbc", 4) and _product(model, "PLT") == ("platelets", 3)
    with pytest.raises(pkpd.errors.PkpdError, match="defines no transfusion product for ANC"):
        _product(model, "ANC")


def _out(df, model, name):
    sel = (df["DVID"] == model.card.output_dvid[name]) & (df["EVID"] == 0)
    return df.loc[sel, "IPRED"].to_numpy()


@pytest.fixture(scope="module")
def transfused():
    """Typical patient: carboplatin 800 mg, then 2 red-cell units and 1 platelet unit at 100 h."""
    model = pkpd.load_model(CARD)
    times = [99.0, 100.0 + DT, 130.0]
    kw = dict(times=times, iiv=False, residual=False, options=TIGHT)
    base = pkpd.simulate(model, "carboplatin 800 mg 1h", **kw)
    sim = pkpd.simulate(model, "carboplatin 800 mg 1h; rbc 2 units @100h; platelets 1 unit @100h", **kw)
    return model, base, sim


def test_regimen_products_raise_their_lineage(transfused):
    model, base, sim = transfused
    assert sim.attrs["dose_units"] == {3: "unit", 4: "unit"}
    hb, hb0 = _out(sim, model, "HGB"), _out(base, model, "HGB")
    plt, plt0 = _out(sim, model, "PLT"), _out(base, model, "PLT")
    assert hb[0] == pytest.approx(hb0[0], rel=1e-9) and plt[0] == pytest.approx(plt0[0], rel=1e-9)
    # one minute after: 2 x 333.3 x 10^9/L x 30 pg x 1e-4 = 1.9998 g/dL, less the first-order loss of
    # the transfused cells over the minute (their extra Ret-driven input starts at O(dt^2))
    expected = 2 * RBC_UNIT * MCH * 1e-4 * np.exp(-KCIRC_RBC * DT)
    assert hb[1] - hb0[1] == pytest.approx(expected, rel=1e-9)
    assert hb[1] - hb0[1] == pytest.approx(2.0, abs=5e-4)  # 333.3 rounds 1000/3: 1.9998
    # platelets: 25 x 10^9/L, less their loss over the minute (kcirc_Plt from the card)
    kplt = model.card.pds[0].parameters["kcirc_Plt"].value
    assert plt[1] - plt0[1] == pytest.approx(PLT_UNIT * np.exp(-kplt * DT), rel=1e-9)
    # red cells do not touch the platelets and vice versa (over 30 h, through the feedbacks only)
    assert hb[2] > hb0[2] + 1.9 and plt[2] > plt0[2]


def test_data_doses_in_units_match_the_regimen(transfused):
    model, base, sim = transfused
    design = sim.drop(columns="IPRED")
    assert sorted(design.loc[design["EVID"] == 1, "CMT"].tolist()) == [1, 3, 4]
    from_data = pkpd.simulate(model, pkpd.read_dataset(design, dose_unit={3: "unit", 4: "unit"}), iiv=False,
                              residual=False, options=TIGHT)
    np.testing.assert_allclose(_out(from_data, model, "HGB"), _out(sim, model, "HGB"), rtol=1e-10)
    np.testing.assert_allclose(_out(from_data, model, "PLT"), _out(sim, model, "PLT"), rtol=1e-10)
    # CMT 4 undeclared: the 2 'units' are 2 x 10^9 cells/L (the state's own unit): 2 x 30e-4 g/dL
    plain = pkpd.simulate(model, pkpd.read_dataset(design, dose_unit={3: "unit"}), iiv=False, residual=False,
                          options=TIGHT)
    jump = _out(plain, model, "HGB")[1] - _out(base, model, "HGB")[1]
    assert jump == pytest.approx(2 * MCH * 1e-4 * np.exp(-KCIRC_RBC * DT), rel=1e-9)


@pytest.fixture(scope="module")
def planned():
    patient = pkpd.read_dataset(ROOT / "data" / "example_marrow.csv")
    return pkpd.plan(CARD.stem, patient, ["none", "dose 80%"], transfuse=["PLT<10:1 unit", "HGB<8:2 units"],
                     method="laplace", draws=20, seed=1)


def test_plan_reports_red_cell_and_platelet_transfusions(planned):
    assert planned.policies["HGB"].product == "rbc" and planned.policies["PLT"].product == "platelets"
    rec = [r for r in planned.records if r["endpoint"] == "red-cell transfusions"]
    assert {r["plan"] for r in rec} == {"none", "dose 80%"} and all(r["lineage"] == "HGB" for r in rec)
    assert any(r["endpoint"] == "platelet transfusions" for r in planned.records)
    assert "red-cell transfusions" in planned.text() and "2 unit(s) of rbc when HGB < 8" in \
        planned.policies["HGB"].table().loc[0, "rule"]


@pytest.mark.parametrize("lineage, threshold, units, product, per_unit, fires", [
    ("HGB", 8.0, 2, "rbc", RBC_UNIT * MCH * 1e-4, False),
    ("PLT", 20.0, 1, "platelets", PLT_UNIT, False),
    # rules that fire on this patient, so that the jump is checked
    ("HGB", 17.0, 2, "rbc", RBC_UNIT * MCH * 1e-4, True),
    ("PLT", 150.0, 1, "platelets", PLT_UNIT, True),
])
def test_transfusion_policy_picks_the_product_of_the_lineage(planned, lineage, threshold, units, product, per_unit,
                                                               fires):
    fc = planned.forecast
    res = fc.transfusion_policy(lineage, threshold, units, max_transfusions=1, step_h=1.0)
    assert res.product == product
    assert res.counts.shape == (20, 1, 2) and np.all(res.counts >= 0)
    assert re.search(rf"{units:g} unit\(s\) of {product} when {lineage}", res.table().loc[0, "rule"])
    given = np.flatnonzero(res.counts[:, 0, 0] >= 1)
    if fires:  # the first transfusion adds units x per_unit
        assert given.size > 0
        d = int(given[0])
        tau = res.times_h[0][0][d][0]
        k = int(np.searchsorted(res.time_h, tau))
        base = np.interp(res.time_h, fc.time_h, fc.lineage_trajectories[lineage][d, 0, 0])
        assert res.trajectories[d, 0, 0, k] == pytest.approx(base[k], rel=1e-4)
        # one hour later: the units' amount less at most an hour of loss (and of feedback)
        assert res.trajectories[d, 0, 0, k + 1] - base[k + 1] == pytest.approx(units * per_unit, rel=0.05)
