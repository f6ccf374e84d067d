"""Rows dealt to devices for a batch forecast (pkpd.forecasting.devices).

The split itself (shard_map over two host devices) is checked end to end against a one-device
forecast in tests/test_forecast.py::test_forecast_split_across_devices_matches_one_device;
here the bookkeeping that decides which patient goes where."""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.forecasting.devices import balanced_rows, deal_rows, rows_for_devices, undeal_rows


@pytest.mark.parametrize("n, d, expected", [(40, 2, 40), (41, 2, 42), (1, 2, 2), (5, 4, 8), (7, 1, 7)])
def test_rows_for_devices_rounds_up_to_a_multiple(n, d, expected):
    assert rows_for_devices(n, d) == expected


@pytest.mark.parametrize("n_real, n_rows, d", [(40, 48, 2), (5, 8, 2), (1, 2, 2), (9, 16, 4), (3, 4, 4), (6, 6, 3)])
def test_balanced_rows_give_every_device_the_same_number_of_real_rows(n_real, n_rows, d):
    order = balanced_rows(n_real, n_rows, d)
    assert sorted(order.tolist()) == list(range(n_rows))  # a permutation
    real_per_device = [(block < n_real).sum() for block in order.reshape(d, -1)]
    assert max(real_per_device) - min(real_per_device) <= 1
    assert sum(real_per_device) == n_real
    # real row i on device i % d, in order within each device
    for k, block in enumerate(order.reshape(d, -1)):
        assert block[block < n_real].tolist() == list(range(k, n_real, d))


def test_balanced_rows_example():
    # 5 real rows, 3 padding rows, 2 devices: 0 2 4 | 1 3 and the padding after each
    assert balanced_rows(5, 8, 2).tolist() == [0, 2, 4, 5, 1, 3, 6, 7]
    with pytest.raises(ValueError, match="multiple of the device count 2"):
        balanced_rows(5, 7, 2)


def test_deal_and_undeal_are_inverse_on_one_device():
    # This process has one device: dealing is the identity; undealing restores any order.
    tree = {"a": np.arange(6.0), "b": np.arange(12).reshape(6, 2)}
    dealt, order = deal_rows(tree, n_real=4)
    assert order.tolist() == list(range(6))
    np.testing.assert_array_equal(dealt["b"], tree["b"])
    perm = np.array([3, 0, 5, 1, 4, 2])
    back = undeal_rows({k: np.asarray(v)[perm] for k, v in tree.items()}, perm)
    np.testing.assert_array_equal(back["a"], tree["a"])
    np.testing.assert_array_equal(back["b"], tree["b"])


@pytest.mark.parametrize("method, n_patients, n_devices, expected",
                         [("nuts", 1, 2, 2), ("nuts", 1, 16, 16), ("nuts", 3, 16, 5), ("nuts", 2, 2, 1),
                          ("nuts", 40, 2, 1), ("nuts", 1, 1, 1), ("laplace", 1, 16, 1)])
def test_chains_per_patient_fill_the_devices(method, n_patients, n_devices, expected):
    from pkpd.forecasting.inference import chains_per_patient

    assert chains_per_patient(method, n_patients, n_devices) == expected


def test_patients_chains_are_concatenated_and_cut_to_the_draws():
    from pkpd.forecasting.inference import per_patient_draws

    # 2 real patients x 3 chains of 4 draws, then 2 padding rows; 10 draws asked for
    n, chains, per, p = 2, 3, 4, 2
    rows = n * chains + 2
    xs = np.zeros((rows, per, p))
    for r in range(rows):
        xs[r] = 100 * r + np.arange(per * p).reshape(per, p)  # row r's values start at 100 r
    theta = {"MTT": xs[:, :, 0]}
    diag = {"divergences": np.arange(rows), "laplace_mode": np.arange(rows * p).reshape(rows, p)}
    out_xs, out_theta, _, out_diag, r_hat = per_patient_draws((xs, theta, {}, diag), n, chains, 10)
    assert out_xs.shape == (n, 10, p) and out_theta["MTT"].shape == (n, 10)
    # patient 1's draws: its chains (rows 3, 4, 5) one after the other, the last cut to 2 draws
    np.testing.assert_array_equal(out_xs[1], np.concatenate([xs[3], xs[4], xs[5][:2]]))
    np.testing.assert_array_equal(out_theta["MTT"][0], np.concatenate([xs[0, :, 0], xs[1, :, 0], xs[2, :2, 0]]))
    np.testing.assert_array_equal(out_diag["divergences"], [[0, 1, 2], [3, 4, 5]])
    assert out_diag["laplace_mode"].shape == (n, chains, p)
    # chains far apart: R-hat far above 1
    assert len(r_hat) == n and min(r_hat) > 2


def test_chains_too_short_to_split_give_no_r_hat():
    """``draws=2`` shared by two chains (the smallest forecast allowed): one draw per chain, which
    split R-hat cannot use (it needs 4); no R-hat rather than a failure."""
    from pkpd.forecasting.inference import per_patient_draws

    xs = np.arange(4.0).reshape(2, 1, 2)  # 1 patient x 2 chains of 1 draw, 2 latent variables
    out_xs, _, _, _, r_hat = per_patient_draws((xs, {}, {}, {}), 1, 2, 2)
    assert r_hat is None
    np.testing.assert_array_equal(out_xs[0], xs[:, 0])


@pytest.mark.parametrize("n_patients, n_devices, expected", [(1, 2, False), (2, 2, True), (40, 2, True), (40, 1, False),
                                                             (3, 16, False), (16, 16, True)])
def test_trajectories_split_only_for_a_batch(n_patients, n_devices, expected):
    from pkpd.forecasting.forecast import _split_trajectories

    assert _split_trajectories(n_patients, n_devices) is expected
