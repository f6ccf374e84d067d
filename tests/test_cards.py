"""Model cards: shipped cards load, unit and IIV conversions, validation messages, CLI."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from pkpd.model.card import concentration_scale, list_cards, load_card, models_dir
from pkpd.cli import models as models_cli
from pkpd.errors import ModelError

SHIPPED = [
    "friberg2002_docetaxel_linear",
    "friberg2002_docetaxel_emax",
    "friberg2002_paclitaxel_wbc",
    "kloft2006_docetaxel",
    "chen2014_nab_paclitaxel",
    "vanhasselt2013_eribulin",
    "ozawa2007_docetaxel",
    "pumas2023_friberg_benchmark",
]


# ----------------------------------------------------------------------------- shipped cards


def test_models_dir_is_the_checkout_folder():
    assert models_dir() == Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_loads(name):
    card = load_card(name)
    assert card.name == name == card.path.stem
    assert card.reference.reliability in "PSTDU"
    assert set(card.error) == set(card.outputs)
    assert card.conc_scale > 0
    for p in card.parameters.values():
        assert p.column is not None or p.value > 0


def test_list_cards_has_every_shipped_card():
    names = [c.name for c in list_cards()]
    assert names == sorted(names)
    assert set(SHIPPED) <= set(names)


def test_load_by_path(tmp_path):
    card = load_card(str(models_dir() / "kloft2006_docetaxel.toml"))
    assert card.name == "kloft2006_docetaxel"


def test_unknown_card_lists_available():
    with pytest.raises(ModelError, match=r"unknown model card 'nope'.*kloft2006_docetaxel"):
        load_card("nope")


def test_env_override(tmp_path, monkeypatch):
    (tmp_path / "mini.toml").write_text(BASE.replace('name = "base"', 'name = "mini"'))
    monkeypatch.setenv("PKPD_MODELS_DIR", str(tmp_path))
    assert [c.name for c in list_cards()] == ["mini"]
    monkeypatch.setenv("PKPD_MODELS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="PKPD_MODELS_DIR"):
        models_dir()


def test_conc_scale():
    assert load_card("kloft2006_docetaxel").conc_scale == pytest.approx(1000 / 808)
    assert load_card("chen2014_nab_paclitaxel").conc_scale == pytest.approx(1000.0)
    assert load_card("friberg2002_paclitaxel_wbc").conc_scale == 1.0
    assert load_card("ozawa2007_docetaxel").conc_scale == 1.0
    assert concentration_scale("ug/L", "umol/L", 808.0) == pytest.approx(1 / 808)
    assert concentration_scale("umol/L", "mg/L", 808.0) == pytest.approx(0.808)
    with pytest.raises(ModelError, match="molar_mass"):
        concentration_scale("mg/L", "umol/L", None)


def test_iiv_conversions():
    kloft = load_card("kloft2006_docetaxel").parameters
    assert kloft["Circ0"].omega == pytest.approx(math.sqrt(0.0639703))
    assert kloft["Circ0"].iiv_given == 0.0639703 and kloft["Circ0"].iiv_form == "omega2"
    assert kloft["gamma"].omega == 0.0 and kloft["gamma"].iiv_given is None
    chen = load_card("chen2014_nab_paclitaxel").parameters
    assert chen["slope"].omega == pytest.approx(math.sqrt(math.log(1 + 0.429**2)))
    assert load_card("pumas2023_friberg_benchmark").parameters["KA"].omega == 0.3


def test_kloft_values_and_covariates():
    card = load_card("kloft2006_docetaxel")
    tv = card.typical_values()
    assert tv["CL"] == pytest.approx(5.2 * 7.4)
    assert tv["V2"] == pytest.approx(1.06 * 7.4 / 1.51)
    assert tv["V3"] == pytest.approx(1.26 * 7.4 / 0.084)
    assert list(tv)[:6] == ["CL", "V1", "Q2", "V2", "Q3", "V3"]
    # The DDMoRe 224 patient (SEX 2, PERF 2, PC 1, AAG 2.54): typical BA ~ 7.05, SL ~ 11.16 per mg/L.
    subject = {"SEX": 2, "PERF": 2, "PC": 1, "AAG": 2.54}
    base, slope = tv["Circ0"], tv["slope"]
    for cov in card.covariates:
        if cov.parameter == "Circ0":
            base *= cov.factor(subject[cov.covariate])
        else:
            slope *= cov.factor(subject[cov.covariate])
    assert base == pytest.approx(7.05, abs=0.01)
    assert slope * card.conc_scale == pytest.approx(11.16, abs=0.01)


def test_column_parameters_and_options():
    ozawa = load_card("ozawa2007_docetaxel")
    assert ozawa.parameters["Circ0"].column == "BASE"
    assert "Circ0" not in ozawa.typical_values()
    assert ozawa.pd.options["dexamethasone"] is True
    pac = load_card("friberg2002_paclitaxel_wbc")
    assert pac.columns() == {"CL": "CLI", "V1": "V1I", "V2": "V2I"}
    assert pac.parameters["Q2"].fixed and pac.parameters["Q2"].value == 204.0
    lin = load_card("friberg2002_docetaxel_linear")
    assert lin.parameters["slope"].tag == "U" and lin.error["ANC"].tag == "U"
    assert load_card("pumas2023_friberg_benchmark").reference.doi is None


# ----------------------------------------------------------------------------- validation

BASE = """
name = "base"
title = "Test card"
drug = "docetaxel"
outputs = ["ANC"]

[reference]
authors = "Doe J"
year = 2020
title = "A paper"
journal = "J Test 2020;1:1-2"
doi = "10.0/x"
reliability = "S"

[pk]
driver = "closed_form"
model = "1cmt"
dose_unit = "mg"
molar_mass = 808.0
concentration_unit = "mg/L"

[pk.parameters]
CL = { value = 38.0, unit = "L/h" }
V1 = { value = 7.4, unit = "L" }

[pd]
system = "friberg"
n_transit = 3
drug_effect = "linear"
concentration_unit = "umol/L"

[pd.parameters]
Circ0 = { value = 5.0, unit = "10^9/L", iiv = 0.1, iiv_form = "omega2" }
MTT = { value = 90.0, unit = "h" }
gamma = { value = 0.16, unit = "1" }
slope = { value = 8.0, unit = "L/umol" }

[error.ANC]
model = "log_additive"
sd = 0.2

[[covariates]]
parameter = "Circ0"
covariate = "SEX"
type = "categorical"
levels = { "2" = -0.1 }
"""


def _write(tmp_path, text, stem="base"):
    path = tmp_path / f"{stem}.toml"
    path.write_text(text)
    return path


def test_base_card_is_valid(tmp_path):
    card = load_card(_write(tmp_path, BASE))
    assert card.name == "base" and card.covariates[0].levels == {2.0: -0.1}


def _sub(old, new):
    def edit(text):
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


BAD = [
    ("toml-syntax", _sub('drug = "docetaxel"', "drug = docetaxel"), ["invalid TOML", "line 4"]),
    ("name-stem", _sub('name = "base"', 'name = "other"'), ["name", "file stem 'base'", "'other'"]),
    ("missing-title", _sub('title = "Test card"\n', ""), ["title", "missing required field"]),
    ("missing-drug-type", _sub('drug = "docetaxel"', "drug = 3"), ["drug", "a non-empty string", "got 3"]),
    ("unknown-driver", _sub('driver = "closed_form"', 'driver = "ode"'),
     ["pk.driver", "'closed_form', 'covariates', 'concentration', 'kpd'", "'ode'"]),
    ("unknown-model", _sub('model = "1cmt"', 'model = "4cmt"'), ["pk.model", "'1cmt'", "'4cmt'"]),
    ("unknown-system", _sub('system = "friberg"', 'system = "quartino"'), ["pd.system", "'friberg'", "'quartino'"]),
    ("unknown-effect", _sub('drug_effect = "linear"', 'drug_effect = "hill"'),
     ["pd.drug_effect", "'sigmoid_emax'", "'hill'"]),
    ("unknown-error-model", _sub('model = "log_additive"', 'model = "exponential"'),
     ["error.ANC.model", "'combined'", "'exponential'"]),
    ("unknown-cov-type", _sub('type = "categorical"', 'type = "spline"'),
     ["covariates[0].type", "'threshold'", "'spline'"]),
    ("value-string", _sub("MTT = { value = 90.0,", 'MTT = { value = "abc",'),
     ["pd.parameters.MTT.value", "expected a positive number", "'abc'"]),
    ("value-nonpositive", _sub("CL = { value = 38.0,", "CL = { value = -1.0,"),
     ["pk.parameters.CL.value", "expected a positive number", "-1.0"]),
    ("missing-param", _sub('slope = { value = 8.0, unit = "L/umol" }\n', ""),
     ["pd.parameters.slope", "missing required field"]),
    ("missing-pk-param", _sub('V1 = { value = 7.4, unit = "L" }\n', ""), ["pk.parameters.V1", "missing"]),
    ("missing-unit", _sub('MTT = { value = 90.0, unit = "h" }', "MTT = { value = 90.0 }"),
     ["pd.parameters.MTT.unit", "missing required field"]),
    ("iiv-negative", _sub("iiv = 0.1,", "iiv = -0.1,"),
     ["pd.parameters.Circ0.iiv", "non-negative number", "-0.1"]),
    ("iiv-form", _sub('iiv_form = "omega2"', 'iiv_form = "var"'),
     ["pd.parameters.Circ0.iiv_form", "'omega2', 'omega', 'cv'", "'var'"]),
    ("reliability", _sub('reliability = "S"', 'reliability = "X"'),
     ["reference.reliability", "'P', 'S', 'T', 'D', 'U'", "'X'"]),
    ("output-without-error", _sub('outputs = ["ANC"]', 'outputs = ["ANC", "WBC"]'),
     ["error.WBC", "missing required field", "[error.WBC]"]),
    ("unknown-output", _sub('outputs = ["ANC"]', 'outputs = ["ANC", "CRP"]'), ["outputs[1]", "ANC, WBC", "'CRP'"]),
    ("cov-unknown-param", _sub('parameter = "Circ0"', 'parameter = "BASE"'),
     ["covariates[0].parameter", "a parameter of this card", "'BASE'"]),
    ("n-transit", _sub("n_transit = 3", "n_transit = 0"), ["pd.n_transit", "an integer >= 1", "0"]),
    ("unknown-top-level", _sub("[pk]", "[pkx]"), ["pkx", "unknown field", "pk, pd"]),
    ("conc-unit-mismatch", _sub('concentration_unit = "mg/L"', 'concentration_unit = "ug/L"'),
     ["pk.concentration_unit", "'mg/L' (the dose unit per litre)", "'ug/L'"]),
    ("molar-mass", _sub("molar_mass = 808.0\n", ""), ["pk.molar_mass", "molar mass (g/mol)", "mg/L", "umol/L"]),
    ("doi-without-notes", _sub('doi = "10.0/x"\n', ""), ["reference.doi", "reference.notes"]),
    ("bad-level", _sub('levels = { "2" = -0.1 }', 'levels = { "female" = -0.1 }'),
     ["covariates[0].levels.female", "numeric level"]),
    ("fixed-type", _sub('MTT = { value = 90.0, unit = "h" }', 'MTT = { value = 90.0, unit = "h", fixed = "yes" }'),
     ["pd.parameters.MTT.fixed", "true or false", "'yes'"]),
    ("column-closed-form", _sub('V1 = { value = 7.4, unit = "L" }', 'V1 = { column = "V1I", unit = "L" }'),
     ["pk.parameters.V1.column", "driver 'covariates'"]),
]

BAD += [
    (
        "unknown-param",
        _sub('slope = { value = 8.0, unit = "L/umol" }', 'slope = { value = 8.0, unit = "L/umol" }\nEC50 = { value = 1.0, unit = "umol/L" }'),
        ["pd.parameters.EC50", "unknown parameter", "Circ0, MTT, gamma, slope"],
    ),
    (
        "ftr-range",
        lambda t: t.replace('system = "friberg"', 'system = "friberg"\nstem_cell = true').replace(
            'slope = { value = 8.0, unit = "L/umol" }', 'slope = { value = 8.0, unit = "L/umol" }\nftr = { value = 1.5, unit = "1" }'),
        ["pd.parameters.ftr.value", "a number in (0, 1)", "1.5"],
    ),
]


@pytest.mark.parametrize("case, edit, expect", BAD, ids=[b[0] for b in BAD])
def test_malformed_card_message(tmp_path, case, edit, expect):
    path = _write(tmp_path, edit(BASE))
    with pytest.raises(ModelError) as info:
        load_card(path)
    message = str(info.value)
    assert "base.toml" in message
    for piece in expect:
        assert piece in message, f"{piece!r} not in {message!r}"


def test_concentration_and_kpd_drivers(tmp_path):
    conc = (BASE.replace('driver = "closed_form"\nmodel = "1cmt"', 'driver = "concentration"\ncolumn = "CP"\n'
                         'interpolation = "nocb"')
            .replace('[pk.parameters]\nCL = { value = 38.0, unit = "L/h" }\nV1 = { value = 7.4, unit = "L" }\n', ""))
    card = load_card(_write(tmp_path, conc))
    assert (card.pk.column, card.pk.interpolation, card.pk.parameters) == ("CP", "nocb", {})
    bad = conc.replace('interpolation = "nocb"', 'interpolation = "spline"')
    with pytest.raises(ModelError, match=r"pk.interpolation.*'linear', 'locf', 'nocb'"):
        load_card(_write(tmp_path, bad))
    kpd = BASE.replace('driver = "closed_form"\nmodel = "1cmt"', 'driver = "kpd"').replace(
        'CL = { value = 38.0, unit = "L/h" }\nV1 = { value = 7.4, unit = "L" }', 'KDE = { value = 0.1, unit = "1/h" }')
    card = load_card(_write(tmp_path, kpd))
    assert card.pk.parameters["KDE"].value == 0.1
    with pytest.raises(ModelError, match=r"pk.parameters.KDE.*missing"):
        load_card(_write(tmp_path, kpd.replace('KDE = { value = 0.1, unit = "1/h" }', "")))


def test_effect_specific_parameters(tmp_path):
    emax = BASE.replace('drug_effect = "linear"', 'drug_effect = "sigmoid_emax"').replace(
        'slope = { value = 8.0, unit = "L/umol" }',
        'Emax = { value = 1.0, unit = "1" }\nEC50 = { value = 2.0, unit = "umol/L" }')
    with pytest.raises(ModelError, match=r"pd.parameters.hill.*missing"):
        load_card(_write(tmp_path, emax))
    card = load_card(_write(tmp_path, emax.replace('EC50 = {', 'hill = { value = 2.0, unit = "1" }\nEC50 = {')))
    assert set(card.pd.parameters) == {"Circ0", "MTT", "gamma", "Emax", "EC50", "hill"}


# ----------------------------------------------------------------------------- CLI


def _parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    models_cli.add_parser(sub)
    return parser


def _cli(argv):
    """Run through ``pkpd.cli.main`` once "models" is registered, else through a local parser."""
    import pkpd.cli as cli

    if "models" in cli._COMMANDS:
        return cli.main(argv)
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ModelError as err:
        import sys

        print(f"pkpd {args.command}: error: {err}", file=sys.stderr)
        return 2


def test_cli_lists_all_cards(capsys):
    assert _cli(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out
    assert "Kloft 2006" in out and "neutrophils" in out and "leukocytes" in out


def test_cli_details(capsys):
    assert _cli(["models", "kloft2006_docetaxel"]) == 0
    out = capsys.readouterr().out
    assert "10.1158/1078-0432.CCR-06-0815" in out
    assert "AAG" in out and "84.1791" in out and "log_additive" in out


def test_cli_unknown_card_exits_2(capsys):
    assert _cli(["models", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model card 'nope'" in err and "kloft2006_docetaxel" in err
