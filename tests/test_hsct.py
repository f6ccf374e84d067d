"""HSCT benchmark (benchmarks/hsct_gcsf.py): the real-data reader and engraftment days read from the data
(opt-in: needs /work/shared/external/npmlda-hsct, else skipped), and the card models/hsct_gcsf_feedback.toml
holding its no-conditioning steady state exactly."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.solve.solver import SolverOptions, predict_outputs
from pkpd.units import unit_factor

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "hsct_gcsf_feedback.toml"
DATA = Path(os.environ.get("PKPD_EXTERNAL", "/work/shared/external")) / "npmlda-hsct" / "hsct_long.csv"


def _bench():
    spec = importlib.util.spec_from_file_location("hsct_gcsf", ROOT / "benchmarks" / "hsct_gcsf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def raw():
    if not DATA.is_file():
        pytest.skip(f"HSCT data not found at {DATA} (set PKPD_EXTERNAL to the folder holding npmlda-hsct/)")
    return _bench().read_hsct(DATA)


# Hand-checked from hsct_long.csv (DVID 1, granulocytes 10^9/L by DAY):
# patient 1:  -5 6.962, -3 4.407, 0 0.566, 1 0.253, 4 0.007, 7 0.004 (nadir), 10 0.118, 14 3.809, 17 2.26,
#             21 7.142 ... Interpolated: day 10 0.118 < 0.5, day 11 0.118 + 3.691/4 = 1.041, days 12, 13 > 0.5
#             -> day 11; consecutive visits >= 0.5 after the nadir: 14, 17, 21 -> day 14.
# patient 20: ... 8 0.012 (nadir), 10 0.037, 13 0.404, 15 0.54, 17 0.686, 21 1.813 ... Interpolated: day 14
#             0.472 < 0.5, days 15 0.54, 16 0.613, 17 0.686 -> day 15; visits 15, 17, 21 -> day 15.
# patient 14: ... 6 0.003 (nadir), 7 0.033, 9 0.131, 11 1.012, 13 1.488, 16 1.988 ... Interpolated: day 10
#             0.5715 -> day 10; visits 11, 13, 16 -> day 11.
HAND = {1: (11.0, 14.0, 7.0, 0.004), 20: (15.0, 15.0, 8.0, 0.012), 14: (10.0, 11.0, 6.0, 0.003)}


def test_reader_and_engraftment_from_data(raw):
    bench = _bench()
    assert raw["ID"].nunique() == 20
    assert int((raw["DVID"] == 1).sum()) == 235 and int((raw["DVID"] == 2).sum()) == 230
    series = bench.granulocytes(raw)
    for sid, (interp, visits, nadir_day, nadir) in HAND.items():
        days, anc = series[sid]
        assert days[np.argmin(anc)] == nadir_day and anc.min() == nadir
        assert bench.engraftment_from_data(days, anc) == (interp, visits), sid
        assert bench.evaluable(days, anc)
    # Visits bracketing the first crossing of 0.5 after the nadir (the engraftment day lies in (lo, hi]).
    assert [bench.bracket(*series[sid]) for sid in (1, 20, 14)] == [(10.0, 14.0), (13.0, 15.0), (9.0, 11.0)]
    # Patient 8's series starts at day +15, after engraftment: not evaluable.
    assert not bench.evaluable(*series[8])


def test_dataset_build(raw):
    bench = _bench()
    ds, lloq, n_cens = bench.build_dataset(raw)
    assert lloq == 0.12 and n_cens == 53
    df = ds.df
    doses = df[df["EVID"] == 1]
    assert len(doses) == 20 and np.allclose(doses["TIME"], 24.0) and np.allclose(doses["AMT"], 1.0)
    obs = df[df["EVID"] == 0]
    assert len(obs) == 465 and int(obs["CENS"].sum()) == 53
    # patient 1, day 14 granulocytes 3.809 at TIME (14 + 8) * 24 h
    row = obs[(obs["ID"] == 1) & (obs["TIME"] == 22 * 24.0) & (obs["DVID"] == 2)]
    assert float(row["DV"].iloc[0]) == pytest.approx(3.809, rel=1e-12)


def test_card_holds_steady_state_without_conditioning():
    """No dose: ANC = Circ0 and G-CSF = G0 to 1e-9 (relative) over 60 days, at the typical values and
    at perturbed individual values."""
    model = pkpd.load_model(CARD)
    assert model.outputs == ("ANC", "GCSF")
    card = model.card
    assert card.solver == "kvaerno5"  # Tsit5 drifts by 4e-8 here (card notes)
    days = np.arange(0.0, 61.0, 1.0)
    rows = [dict(ID=i, TIME=d * 24.0, DV=1.0, AMT=0.0, EVID=0, MDV=0, CMT=0, DVID=dv)
            for i in (1, 2) for d in days for dv in (2, 6)]
    ds = pkpd.read_dataset(pd.DataFrame(rows), units={"GCSF": "pg/mL"})
    canon = ds.df.reset_index(drop=True)
    ids = list(ds.ids)
    system, data = model.prepare(canon, ids, n_subjects=2)
    typical = card.typical_values()
    perturbed = {p: v * (1.37 if p in ("Circ0", "G0", "MTT", "kANC", "slope") else 1.0) for p, v in typical.items()}
    theta = {p: jnp.asarray([typical[p], perturbed[p]]) for p in typical}
    t = np.tile(days * 24.0, (2, 1))
    out, ok, _ = predict_outputs(system, data, theta, jnp.asarray(t), jnp.asarray(np.full_like(t, 1e6)),
                                 SolverOptions(solver=card.solver, rtol=1e-8, atol=1e-10))
    assert bool(np.all(np.asarray(ok)))
    g_factor = unit_factor("GCSF", "pg/mL")
    for s, th in enumerate((typical, perturbed)):
        np.testing.assert_allclose(np.asarray(out["ANC"])[s], th["Circ0"], rtol=1e-9, atol=0)
        np.testing.assert_allclose(np.asarray(out["GCSF"])[s], th["G0"] * g_factor, rtol=1e-9, atol=0)
