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
