"""Model cards, schema 2: several drugs, PD components, couplings, outputs; packaging of the cards."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pkpd.errors import ModelError
from pkpd.model.card import list_cards, load_card
from pkpd.model.model import load_model

BASE = '''schema = 2
name = "base"
title = "Two drugs and two PD components"

[reference]
authors = "Doe J"
year = 2020
title = "T"
journal = "J 2020;1:1"
doi = "10.0/x"
reliability = "D"

[[pk]]
drug = "docetaxel"
cmt = { central = 1 }
driver = "closed_form"
model = "1cmt"
dose_unit = "mg"
molar_mass = 808.0
concentration_unit = "mg/L"

[pk.parameters]
CL = { value = 38.0, unit = "L/h" }
V1 = { value = 7.4, unit = "L" }

[[pk]]
drug = "filgrastim"
cmt = { depot = 2 }
driver = "ode"
compartments = 1
absorption = true
binding = "tmdd_qe"
rename = { CL = "CLD", V1 = "VD", KA = "KSC", XI = "SR" }
dose_unit = "nmol"
molar_mass = 18800.0
concentration_unit = "nmol/L"

[pk.parameters]
CLD = { value = 0.833, unit = "L/h" }
VD = { value = 3.12, unit = "L" }
KSC = { value = 0.123, unit = "1/h" }
KD = { value = 0.0237, unit = "nM" }
KINT = { value = 0.113, unit = "1/h" }
SR = { value = 0.059, unit = "nM per 10^9/L" }

[[pd]]
name = "neutrophils"
system = "friberg"
output = "ANC"
drug_effect = "linear"
gcsf_stimulation = true
cmt = { Circ = 9 }

[pd.parameters]
Circ0 = { value = 5.0, unit = "10^9/L", iiv = 0.1, iiv_form = "omega2" }
MTT = { value = 90.0, unit = "h" }
gamma = { value = 0.16, unit = "1" }
slope = { value = 8.0, unit = "L/umol" }
STM1 = { value = 7.53, unit = "1" }
STM2 = { value = 3.89, unit = "1" }

[couplings]
"neutrophils.drug" = { signal = "docetaxel.conc", unit = "umol/L" }
"neutrophils.occupancy" = "filgrastim.occupancy"
"filgrastim.receptor" = "neutrophils.ANC"

[observe.ANC]
signal = "neutrophils.ANC"
unit = "10^9/L"

[observe."CONC:filgrastim"]
signal = "filgrastim.conc"
unit = "nmol/L"
dvid = 8

[error.ANC]
model = "log_additive"
sd = 0.2

[error."CONC:filgrastim"]
model = "proportional"
sd = 0.3
'''


def _write(tmp_path, text, stem="base"):
    path = tmp_path / f"{stem}.toml"
    path.write_text(text)
    return path


def test_two_drug_card_builds_the_coupled_model(tmp_path):
    card = load_card(_write(tmp_path, BASE))
    assert card.schema == 2 and card.drugs == ("docetaxel", "filgrastim")
    assert card.outputs == ("ANC", "CONC:filgrastim") and card.output_dvid == {"ANC": 2, "CONC:filgrastim": 8}
    model = load_model(card)
    system = model.dynamics
    assert system.component_names == ("docetaxel", "filgrastim", "neutrophils")
    assert {(r.cmt, r.component, r.target) for r in system.routes} == {
        (1, "docetaxel", "central"), (2, "filgrastim", "depot"), (9, "neutrophils", "Circ")}
    scales = dict(zip([r.cmt for r in system.routes], np.asarray(system.route_scale)))
    assert scales[1] == pytest.approx(1.0) and scales[2] == pytest.approx(1e6 / 18800.0)  # mg -> nmol
    assert np.asarray(system.link_scale)[0] == pytest.approx(1000 / 808)
    assert set(model.parameter_names) >= {"CLD", "VD", "KSC", "SR", "STM1"}
    assert set(system.pk_parameter_names) == {"CL", "V1", "CLD", "VD", "KSC", "KD", "KINT", "SR"}


def _sub(old, new):
    def edit(text):
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


BAD = [
    ("unbound-input", _sub('"neutrophils.occupancy" = "filgrastim.occupancy"\n', ""),
     ["couplings.neutrophils.occupancy", "missing required field"]),
    ("unknown-signal", _sub('"filgrastim.receptor" = "neutrophils.ANC"', '"filgrastim.receptor" = "neutrophils.PLT"'),
     ["couplings.filgrastim.receptor.signal", "a signal of the model", "'neutrophils.PLT'"]),
    ("unknown-input", _sub('"filgrastim.receptor" =', '"filgrastim.target" ='),
     ["couplings.filgrastim.target", "a component input"]),
    ("missing-parameter", _sub('KINT = { value = 0.113, unit = "1/h" }\n', ""),
     ["pk[1].parameters.KINT", "missing required field"]),
    ("duplicate-parameter", _sub('STM2 = { value = 3.89, unit = "1" }', 'STM2 = { value = 3.89, unit = "1" }\nKD = { value = 1.0, unit = "nM" }'),
     ["pd[0].parameters.KD", "declared once", "pk[1]"]),
    ("unknown-parameter", _sub('STM2 = { value = 3.89, unit = "1" }', 'STM2 = { value = 3.89, unit = "1" }\nEC50 = { value = 1.0, unit = "nM" }'),
     ["pd[0].parameters.EC50", "unknown parameter"]),
    ("bad-target", _sub("cmt = { depot = 2 }", "cmt = { gut = 2 }"), ["pk[1].cmt.gut", "dose target", "depot"]),
    ("cmt-twice", _sub("cmt = { Circ = 9 }", "cmt = { Circ = 2 }"), ["each data CMT routed to one dose target"]),
    ("bad-output", _sub('[observe."CONC:filgrastim"]', '[observe."CONC:pegfilgrastim"]'),
     ["observe.CONC:pegfilgrastim", "CONC:<drug>"]),
    ("molar-unit-needs-mass", _sub("molar_mass = 18800.0\n", ""), ["pk[1].dose_unit", "molar"]),
    ("bad-system", _sub('system = "friberg"', 'system = "nope"'), ["pd[0]", "nope"]),
    ("bad-option", _sub("gcsf_stimulation = true", "gcsf_stimulation = true\ntransits = 5"), ["pd[0]", "transits"]),
    ("ode-compartments", _sub("compartments = 1", "compartments = 4"), ["pk[1].compartments", "1, 2 or 3"]),
    ("conc-unit", _sub('concentration_unit = "nmol/L"', 'concentration_unit = "ng/mL"'),
     ["pk[1].concentration_unit", "'nmol/L' (the dose unit per litre)"]),
    ("schema", _sub("schema = 2", "schema = 3"), ["schema", "1 or 2", "3"]),
    ("cycle", lambda t: t.replace('"filgrastim.receptor" = "neutrophils.ANC"', '"filgrastim.receptor" = "filgrastim.conc"'),
     ["algebraic cycle", "filgrastim"]),
]


@pytest.mark.parametrize("case, edit, expect", BAD, ids=[b[0] for b in BAD])
def test_malformed_v2_card_message(tmp_path, case, edit, expect):
    path = _write(tmp_path, edit(BASE))
    with pytest.raises(ModelError) as info:
        load_card(path)
    msg = str(info.value)
    assert "base.toml" in msg
    for part in expect:
        assert part in msg, f"{case}: {part!r} not in {msg!r}"


def test_every_shipped_card_is_schema_2_and_builds():
    cards = list_cards()
    assert len(cards) >= 9
    for card in cards:
        assert card.schema == 2, card.name
        model = load_model(card)
        assert set(model.outputs) == set(card.observe)


def test_ported_cards_keep_their_schema_1_meaning(tmp_path):
    """The schema-1 form of a card (still accepted) builds the same system as its port."""
    v1 = '''name = "kloft_v1"
title = "t"
drug = "docetaxel"
outputs = ["ANC"]
[reference]
authors = "Kloft C"
year = 2006
title = "t"
journal = "j"
doi = "10.1158/1078-0432.CCR-06-0815"
reliability = "S"
[pk]
driver = "closed_form"
model = "3cmt"
dose_unit = "mg"
molar_mass = 808.0
concentration_unit = "mg/L"
[pk.parameters]
CL = { value = 38.48, unit = "L/h" }
V1 = { value = 7.4, unit = "L" }
Q2 = { value = 7.844, unit = "L/h" }
V2 = { value = 5.194701986754967, unit = "L" }
Q3 = { value = 9.324, unit = "L/h" }
V3 = { value = 111.0, unit = "L" }
[pd]
system = "friberg"
drug_effect = "linear"
concentration_unit = "umol/L"
[pd.parameters]
Circ0 = { value = 5.21965, unit = "10^9/L" }
MTT = { value = 84.1791, unit = "h" }
slope = { value = 15.5711, unit = "L/umol" }
gamma = { value = 0.144543, unit = "1" }
[error.ANC]
model = "log_additive"
sd = 0.424093
'''
    old = load_model(load_card(_write(tmp_path, v1, "kloft_v1")))
    new = load_model("kloft2006_docetaxel")
    assert old.card.schema == 1
    assert np.asarray(old.dynamics.link_scale) == pytest.approx(np.asarray(new.dynamics.link_scale))
    assert np.asarray(old.dynamics.route_scale)[0] == pytest.approx(np.asarray(new.dynamics.route_scale)[0])
    assert old.card.typical_values() == {k: v for k, v in new.card.typical_values().items()}


def test_wheel_ships_the_cards_and_the_example_data(tmp_path):
    """`pip install .` (not editable) must find the cards: they are package data of the wheel."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-300:]}")
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    cards = {p.name for p in (root / "models").glob("*.toml")}
    assert cards and all(f"pkpd/_models/{c}" in names for c in cards), sorted(n for n in names if "_models" in n)
    assert "pkpd/_data/example.csv" in names


def test_every_drug_concentration_is_an_output_even_when_not_observed():
    """Simulations report concentrations as schema-1 models did (CONC, and CONC:<drug>)."""
    model = load_model("kloft2006_docetaxel")
    assert model.outputs == ("ANC",)  # what the card observes (and fits)
    assert {"ANC", "CONC", "CONC:docetaxel"} <= set(model.dynamics.output_names)
    import pkpd

    import pandas as pd

    cov = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
    rows = [dict(ID=1, TIME=0.0, DV=np.nan, AMT=180.0, RATE=180.0, CMT=1, EVID=1, MDV=1, DVID=0, **cov)]
    rows += [dict(ID=1, TIME=t, DV=np.nan, AMT=0.0, RATE=0.0, CMT=0, EVID=0, MDV=0, DVID=d, **cov)
             for t, d in ((0.5, 1), (2.0, 1), (48.0, 2))]
    design = pd.DataFrame(rows).assign(II=0, ADDL=0, SS=0)
    sim = pkpd.simulate(model, design, seed=1)
    conc = sim[sim["DVID"] == 1]
    assert len(conc) == 2 and np.all(np.isfinite(conc["IPRED"].to_numpy(float))) and conc["IPRED"].min() > 0.1


# --------------------------------------------------------------------------- IIV correlations in cards
CORR_CARD = Path(__file__).resolve().parents[1] / "models" / "quartino2014_docetaxel_gcsf.toml"


def _card_with(tmp_path, table: str, name="corr_test"):
    text = CORR_CARD.read_text().replace('name = "quartino2014_docetaxel_gcsf"', f'name = "{name}"') + table
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_card_iiv_correlations_drive_simulated_etas(tmp_path):
    model = load_model(_card_with(tmp_path, '\n[iiv_correlations]\n"Circ0,G0" = -0.6\n"MTT,slope" = 0.3\n'))
    names = ["Circ0", "MTT", "slope", "G0"]
    corr = model.iiv_correlation(names)
    assert corr[0, 3] == corr[3, 0] == -0.6 and corr[1, 2] == 0.3 and corr[0, 1] == 0.0
    eta = model.draw_etas(np.random.default_rng(7), 20_000)
    emp = np.corrcoef(np.stack([eta[n] for n in names]))
    # 20,000 draws: the SE of a sample correlation is below 0.0075, so 0.03 is 4 SE
    np.testing.assert_allclose(emp, corr, atol=0.03)
    np.testing.assert_allclose(np.std(eta["Circ0"]), model.parameters["Circ0"].omega, rtol=0.03)
    # a card without correlations draws exactly as before (independent, in parameter order)
    plain = load_model("quartino2014_docetaxel_gcsf")
    a = plain.draw_etas(np.random.default_rng(3), 5)
    rng = np.random.default_rng(3)
    for n in [p for p, spec in plain.parameters.items() if spec.omega > 0]:
        np.testing.assert_array_equal(a[n], rng.normal(0.0, plain.parameters[n].omega, size=5))


@pytest.mark.parametrize("table, words", [
    ('"Circ0,gamma" = 0.2', ["iiv_correlations.Circ0,gamma", "IIV", "gamma"]),
    ('"Circ0,G0" = 1.0', ["strictly between -1 and 1"]),
    ('"Circ0" = 0.2', ["two different parameter names"]),
    ('"Circ0,G0" = 0.9\n"Circ0,MTT" = 0.9\n"MTT,G0" = -0.9', ["positive-definite"]),
])
def test_bad_iiv_correlations_name_the_field(tmp_path, table, words):
    with pytest.raises(ModelError) as err:
        load_model(_card_with(tmp_path, "\n[iiv_correlations]\n" + table + "\n"))
    for w in words:
        assert w in str(err.value)
