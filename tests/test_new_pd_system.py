"""A new PD system is one module (tests/pd_turnover.py) plus one model card: no other change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.errors import ModelError

CARD = """
name = "turnover_example"
title = "Indirect-response platelet model (test of the plug-in PD system mechanism)"
drug = "hypothetical"
outputs = ["PLT"]
[reference]
authors = "pkpd tests"
year = 2026
title = "Plug-in PD system"
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
CL = { value = 5.0, unit = "L/h" }
V1 = { value = 20.0, unit = "L" }
[pd]
system = "pd_turnover:Turnover"
output = "PLT"
concentration_unit = "mg/L"
[pd.parameters]
BASE = { value = 250.0, unit = "10^9/L", iiv = 0.2, iiv_form = "omega" }
KOUT = { value = 0.01, unit = "1/h" }
Imax = { value = 0.9, unit = "1" }
IC50 = { value = 0.5, unit = "mg/L" }
[error.PLT]
model = "proportional"
sd = 0.1
"""


def test_plugin_pd_system_loads_simulates_and_holds_steady_state(tmp_path):
    path = tmp_path / "turnover_example.toml"
    path.write_text(CARD)
    model = pkpd.load_model(str(path))
    assert model.parameter_names == ("CL", "V1", "BASE", "KOUT", "Imax", "IC50")
    times = np.arange(0.0, 30 * 24 + 1, 24.0)
    dosed = pkpd.simulate(model, "100 mg 1h", times=times, iiv=False, residual=False)
    plt = dosed.loc[dosed["EVID"] == 0, "DV"].to_numpy()
    assert plt[0] == pytest.approx(250.0) and plt.min() < 240.0 and plt[-1] == pytest.approx(250.0, rel=0.05)
    # Exact steady state without drug.
    design = pd.DataFrame(dict(ID=1, TIME=times, DV=np.nan, AMT=0.0, EVID=0, MDV=1, CMT=0, RATE=0.0, II=0.0,
                               ADDL=0, SS=0, DVID=3))
    none = pkpd.simulate(model, design, iiv=False, residual=False)
    np.testing.assert_allclose(none["DV"], 250.0, rtol=1e-12)
    # Round trip through check_dataset.
    sim = pkpd.simulate(model, "100 mg 1h q7d x2", n_subjects=3, times=times, seed=2)
    out = tmp_path / "sim.csv"
    sim.to_csv(out, index=False, na_rep=".")
    assert pkpd.check_dataset(out).ok


def test_plugin_card_errors_name_the_field(tmp_path):
    bad = tmp_path / "turnover_example.toml"
    bad.write_text(CARD.replace("IC50 = { value = 0.5", "IC5 = { value = 0.5"))
    with pytest.raises(ModelError, match="pd.parameters"):
        pkpd.load_model(str(bad))
    bad.write_text(CARD.replace("pd_turnover:Turnover", "pd_turnover:Nope"))
    with pytest.raises(ModelError, match="pd.system"):
        pkpd.load_model(str(bad))
