"""Dose units in data files: one unit or one per compartment (mass, molar, IU), converted by the model."""

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.errors import DatasetError, ModelError
from pathlib import Path

CARD_DIR = Path(__file__).resolve().parents[1] / "models"
from pkpd.model.model import load_model

DOCETAXEL_MOLAR_MASS = 808.0


def frame(amount, cmt=1, times=(24.0, 120.0, 192.0, 312.0)):
    rows = [{"ID": 1, "TIME": 0.0, "DV": ".", "AMT": amount, "EVID": 1, "MDV": 1, "CMT": cmt, "RATE": amount,
             "DVID": 0, "BSA": 1.8, "AAG": 1.34, "PERF": 0, "PC": 0, "SEX": 1}]
    rows += [{"ID": 1, "TIME": t, "DV": 3.0, "AMT": 0, "EVID": 0, "MDV": 0, "CMT": 0, "RATE": 0, "DVID": 2,
              "BSA": 1.8, "AAG": 1.34, "PERF": 0, "PC": 0, "SEX": 1} for t in times]
    return pd.DataFrame(rows)


def ipred(model, ds):
    return pkpd.simulate(model, ds, iiv=False, residual=False)["IPRED"].to_numpy()


def test_per_compartment_units_are_stored_in_their_base_unit_and_recorded():
    df = frame(100.0)
    df = pd.concat([df, df.iloc[:1].assign(CMT=3, AMT=40.0, RATE=0.0)], ignore_index=True).sort_values("TIME",
                                                                                                          kind="stable")
    ds = pkpd.read_dataset(df, dose_unit={1: "ug", 3: "kIU"})
    doses = ds.df[ds.df["EVID"] == 1].set_index("CMT")
    assert doses.loc[1, "AMT"] == pytest.approx(0.1)  # ug -> mg
    assert doses.loc[1, "RATE"] == pytest.approx(0.1)
    assert doses.loc[3, "AMT"] == pytest.approx(40_000.0)  # kIU -> IU
    assert ds.dose_units == {1: "ug", 3: "kIU"}
    assert ds.stored_dose_units == {1: "mg", 3: "IU"}
    same = pkpd.read_dataset(df, dose_unit="1=ug, 3=kIU")
    assert same.hash == ds.hash and same.dose_units == ds.dose_units
    assert pkpd.read_dataset(df, dose_unit={1: "ug", 3: "IU"}).hash != ds.hash
    # the default keeps today's meaning: every dose in mg
    plain = pkpd.read_dataset(frame(100.0))
    assert plain.dose_unit == "mg" and plain.dose_units == {1: "mg"}


@pytest.mark.parametrize("bad, words", [
    ({1: "furlong"}, ["CMT 1", "furlong"]),
    ({"x": "mg"}, ["compartment", "'x'"]),
    ("1:mg", ["1:mg"]),
    ("1=", ["CMT=UNIT"]),
])
def test_bad_dose_unit_declarations_name_the_problem(bad, words):
    with pytest.raises(DatasetError) as err:
        pkpd.read_dataset(frame(100.0), dose_unit=bad)
    for w in words:
        assert w in str(err.value)


def test_mass_and_molar_data_give_the_same_predictions():
    kloft = load_model("kloft2006_docetaxel")
    mg = ipred(kloft, pkpd.read_dataset(frame(150.0)))
    ug = ipred(kloft, pkpd.read_dataset(frame(150_000.0), dose_unit="ug"))
    umol = ipred(kloft, pkpd.read_dataset(frame(150.0 * 1000 / DOCETAXEL_MOLAR_MASS), dose_unit={1: "umol"}))
    obs = ~np.isnan(mg)
    assert obs.sum() == 4 and mg[obs].min() < 2.0  # the dose matters: ANC well below baseline
    np.testing.assert_allclose(ug[obs], mg[obs], rtol=1e-10)
    np.testing.assert_allclose(umol[obs], mg[obs], rtol=1e-10)
    # the unit is used: 150 umol is 121 mg of docetaxel, a shallower nadir than 150 mg
    wrong = ipred(kloft, pkpd.read_dataset(frame(150.0), dose_unit={1: "umol"}))
    assert wrong[obs].min() > 1.3 * mg[obs].min()


@pytest.fixture(scope="module")
def iu_model(tmp_path_factory):
    """Kloft's card with the drug dosed in IU (a made-up activity drug for the unit path only)."""
    text = (CARD_DIR / "kloft2006_docetaxel.toml").read_text()
    for old, new in (('dose_unit = "mg"', 'dose_unit = "IU"'), ("molar_mass = 808.0\n", ""),
                     ('concentration_unit = "mg/L"', 'concentration_unit = "IU/L"'),
                     ('unit = "umol/L" }', 'unit = "IU/L" }'), ('name = "kloft2006_docetaxel"', 'name = "iu_test"')):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("cards") / "iu_test.toml"
    path.write_text(text)
    return load_model(path)


def test_iu_doses_in_data_and_regimens(iu_model):
    iu = ipred(iu_model, pkpd.read_dataset(frame(150.0), dose_unit="IU"))
    kiu = ipred(iu_model, pkpd.read_dataset(frame(0.15), dose_unit={1: "kIU"}))
    obs = ~np.isnan(iu)
    np.testing.assert_allclose(kiu[obs], iu[obs], rtol=1e-10)
    assert iu[obs].min() < 3.0
    # a regimen in IU is written in the drug's unit and solved the same way
    sim = pkpd.simulate(iu_model, "docetaxel 150 IU 1h", covariates={"BSA": 1.8, "AAG": 1.34, "PERF": 0, "PC": 0,
                                                                      "SEX": 1},
                        times=[24.0, 120.0, 192.0, 312.0], iiv=False, residual=False)
    got = sim.loc[sim["DVID"] == 2, "IPRED"].to_numpy()
    np.testing.assert_allclose(got, iu[obs], rtol=1e-10)
    assert sim.attrs["dose_units"][1] == "IU"  # how to read the simulated AMT back


def test_a_unit_the_model_cannot_convert_is_an_error_naming_the_compartment(iu_model):
    with pytest.raises(ModelError) as err:  # data in mg (the default) for an IU drug
        ipred(iu_model, pkpd.read_dataset(frame(150.0)))
    assert "CMT 1" in str(err.value) and "IU" in str(err.value)
    kloft = load_model("kloft2006_docetaxel")
    with pytest.raises(ModelError) as err:
        ipred(kloft, pkpd.read_dataset(frame(150.0), dose_unit={1: "IU"}))
    assert "CMT 1" in str(err.value) and "mg" in str(err.value)


def test_population_problem_uses_the_data_units():
    from pkpd.stats.population import FitSpec, PopulationProblem

    kloft = load_model("kloft2006_docetaxel")
    mg = PopulationProblem(kloft, pkpd.read_dataset(frame(150.0)), FitSpec())
    ug = PopulationProblem(kloft, pkpd.read_dataset(frame(150_000.0), dose_unit="ug"), FitSpec())
    umol = PopulationProblem(kloft, pkpd.read_dataset(frame(150.0 * 1000 / DOCETAXEL_MOLAR_MASS), dose_unit="umol"),
                             FitSpec())
    # CMT 1 (dosed, in umol) converts to the card's mg; the undosed peripheral routes keep mg
    np.testing.assert_allclose(np.asarray(umol.dynamics.route_scale), [DOCETAXEL_MOLAR_MASS / 1000.0, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(mg.dynamics.route_scale), [1.0, 1.0, 1.0])
    init = mg.initial_values()
    theta_mg, sigma = mg.params_from_sample(init)
    theta_ug, _ = ug.params_from_sample(init)
    a = float(mg.pointwise_loglik(theta_mg, sigma)[0].sum())
    b = float(ug.pointwise_loglik(theta_ug, sigma)[0].sum())
    assert np.isfinite(a) and a == pytest.approx(b, rel=1e-12)



def test_blood_product_doses_in_units_from_data_and_regimens(tmp_path):
    """A card's [[pd]] product (here a made-up granulocyte transfusion into Quartino's circulating
    neutrophils, 2 x10^9/L per unit): 'unit' doses from a regimen and from data give the same jump."""
    text = (CARD_DIR / "quartino2014_docetaxel_gcsf.toml").read_text()
    old = 'system = "gcsf_feedback_neutrophils"\n'
    assert old in text
    text = text.replace(old, old + 'cmt = { Circ = 5 }\nproduct = { name = "granulocytes", unit_amount = 2.0 }\n')
    text = text.replace('name = "quartino2014_docetaxel_gcsf"', 'name = "product_test"')
    path = tmp_path / "product_test.toml"
    path.write_text(text)
    model = load_model(path)
    cov = {"BSA": 1.8}
    times = [239.0, 240.0, 240.0001]
    base = pkpd.simulate(model, "docetaxel 100 mg/m2 1h", covariates=cov, times=times, iiv=False, residual=False)
    sim = pkpd.simulate(model, "docetaxel 100 mg/m2 1h; granulocytes 3 units @240h", covariates=cov, times=times,
                        iiv=False, residual=False)
    anc = lambda d: d.loc[(d["DVID"] == model.card.output_dvid["ANC"]) & (d["EVID"] == 0), "IPRED"].to_numpy()  # noqa
    a, b = anc(base), anc(sim)
    assert b[0] == pytest.approx(a[0], rel=1e-6)  # before the transfusion (solver tolerance: its steps differ)
    assert b[2] - a[2] == pytest.approx(6.0, rel=1e-3)  # 3 units x 2 x10^9/L added at 240 h
    assert sim.attrs["dose_units"] == {5: "unit"}
    # the same doses read from a data file declared in units
    design = sim.drop(columns="IPRED")
    from_data = pkpd.simulate(model, pkpd.read_dataset(design, dose_unit={5: "unit"}), iiv=False, residual=False)
    np.testing.assert_allclose(anc(from_data), b, rtol=1e-10)
    # undeclared, the same amount is in the state's unit (x10^9/L): a third of the jump
    plain = pkpd.simulate(model, pkpd.read_dataset(design), iiv=False, residual=False)
    assert anc(plain)[2] - a[2] == pytest.approx(3.0, rel=1e-3)
    with pytest.raises(ModelError, match="CMT 5"):
        pkpd.simulate(model, pkpd.read_dataset(design, dose_unit={5: "IU"}), iiv=False, residual=False)


def test_product_units_are_not_mixed_with_state_unit_doses_in_the_same_compartment(tmp_path):
    text = (CARD_DIR / "quartino2014_docetaxel_gcsf.toml").read_text()
    old = 'system = "gcsf_feedback_neutrophils"\n'
    text = text.replace(old, old + 'cmt = { Circ = 5 }\nproduct = { name = "granulocytes", unit_amount = 2.0 }\n')
    path = tmp_path / "mix_test.toml"
    path.write_text(text.replace('name = "quartino2014_docetaxel_gcsf"', 'name = "mix_test"'))
    model = load_model(path)
    inputs, used = model.drug_inputs({1: "mg", 5: "mg"})  # the data dose CMT 5 in x10^9/L
    assert "granulocytes" not in inputs and 5 not in used
    inputs, used = model.drug_inputs({1: "mg", 5: "unit"})
    assert inputs["granulocytes"].dose_unit == "unit" and used[5] == "unit"
