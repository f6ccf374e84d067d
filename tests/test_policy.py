"""Transfusion policies on forecast draws (pkpd.forecasting.policy)."""

from pathlib import Path

import numpy as np
import pytest

import pkpd
from pkpd.errors import PkpdError
from pkpd.forecasting import endpoints as ep

CARDS = Path(__file__).resolve().parents[1] / "models"
COV = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
UNIT = 1.0  # x10^9/L per unit of the made-up granulocyte product


@pytest.fixture(scope="module")
def forecast(tmp_path_factory):
    """Kloft's card with a made-up granulocyte product into the circulating neutrophils (test only)."""
    text = (CARDS / "kloft2006_docetaxel.toml").read_text()
    old = 'system = "friberg"\n'
    text = text.replace(old, old + f'cmt = {{ Circ = 5 }}\nproduct = {{ name = "granulocytes", unit_amount = {UNIT} }}\n')
    text = text.replace('name = "kloft2006_docetaxel"', 'name = "policy_test"')
    path = tmp_path_factory.mktemp("cards") / "policy_test.toml"
    path.write_text(text)
    model = pkpd.load_model(path)
    sim = pkpd.simulate(model, "docetaxel 100 mg/m2 1h", 1, seed=5, times=np.arange(0, 8 * 24, 24.0), covariates=COV)
    ds = pkpd.read_dataset(sim.drop(columns="IPRED"))
    return pkpd.forecast(model, ds, ["docetaxel 100 mg/m2 1h @504h", "docetaxel 60 mg/m2 1h @504h"],
                         method="laplace", draws=40, seed=2, horizon="21d")


def test_policy_follows_the_rule_on_every_draw(forecast):
    thr = 0.5
    res = forecast.transfusion_policy("ANC", thr, units=2, max_transfusions=6)
    assert res.counts.shape == (40, 1, 2)
    full, reduced = res.counts[:, 0, 0], res.counts[:, 0, 1]
    assert full.mean() > 0 and np.all(full >= reduced)  # the same draw needs no more at the lower dose
    t = forecast.time_h
    checks = np.arange(504.0, res.time_h[-1] + 1e-9, 24.0)
    plain = ep._sample(t, forecast.lineage_trajectories["ANC"][:, 0, 0, :], checks)
    for d in range(40):
        times = res.times_h[0][0][d]
        below = checks[plain[d] < thr]
        if below.size == 0:  # never below without transfusions: none given
            assert times.size == 0
            continue
        # the first transfusion is at the first check below the threshold of the course without any
        assert times.size >= 1 and times[0] == below[0]
        # under the policy, every check before a transfusion time that is not one is >= the threshold
        y = ep._sample(res.time_h, res.trajectories[d, 0, 0], checks)
        given = np.isin(checks, times)
        assert np.all(y[~given & (checks < times[-1])] >= thr)
        if times.size < 6:
            assert np.all(y[checks > times[-1]] >= thr)
        # each transfusion adds exactly units * unit_amount at its time
        k = np.searchsorted(res.time_h, times[0])
        assert res.time_h[k] == times[0]
    table = res.table()
    assert table.loc[0, "expected_transfusions"] == pytest.approx(full.mean())
    assert table.loc[0, "p_any"] == pytest.approx(np.mean(full >= 1))
    assert table.loc[0, "nadir_median"] >= table.loc[0, "nadir_median"] * 0  # finite
    assert "granulocytes when ANC < 0.5" in table.loc[0, "rule"]


def test_policy_jump_is_the_product_amount(forecast):
    res = forecast.transfusion_policy("ANC", 0.5, units=2, max_transfusions=1, step_h=1.0)
    d = int(np.flatnonzero(res.counts[:, 0, 0] == 1)[0])
    tau = res.times_h[0][0][d][0]
    k = int(np.searchsorted(res.time_h, tau))
    base = forecast.lineage_trajectories["ANC"][d, 0, 0]
    # pre-dose value at tau equals the course without transfusion; one hour later it is higher by about 2 units
    assert res.trajectories[d, 0, 0, k] == pytest.approx(base[k], rel=1e-6)
    assert res.trajectories[d, 0, 0, k + 1] - base[k + 1] == pytest.approx(2 * UNIT, rel=0.1)


def test_policy_needs_a_product(forecast):
    with pytest.raises(PkpdError, match="no transfusion product"):
        pkpd.forecast("kloft2006_docetaxel", forecast._context["dataset"], method="laplace", draws=40,
                      seed=2).transfusion_policy("ANC", 0.5)
