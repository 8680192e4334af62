"""The tabular modality and encoder: missing values, column order, fitted statistics."""

from __future__ import annotations

import math

import pytest
import torch
from mmplug import DataError

from mmplug_tabular.encoder import TabularMLP
from mmplug_tabular.modality import TabularModality


def test_values_lists_strings_and_mappings_load_alike() -> None:
    load = TabularModality().load
    expected = torch.tensor([1.0, 2.5, -3.0])
    torch.testing.assert_close(load([1, 2.5, -3]), expected)
    torch.testing.assert_close(load(" 1, 2.5 ,-3"), expected)
    torch.testing.assert_close(load({"c": -3, "a": 1, "b": "2.5"}), expected)  # sorted columns


@pytest.mark.parametrize("row", ["1,,3", [1, None, 3], {"a": 1, "b": "NA", "c": 3}])
def test_blanks_and_missing_markers_are_nan(row: object) -> None:
    values = TabularModality().load(row)
    assert math.isnan(values[1]) and values[0] == 1 and values[2] == 3


@pytest.mark.parametrize(
    ("value", "named"),
    [("1,two,3", "'two'"), ([1.0, float("inf")], "inf"), (42, "42"), ([], "no columns")],
)
def test_bad_rows_are_data_errors_naming_the_value(value: object, named: str) -> None:
    with pytest.raises(DataError, match=named):
        TabularModality().load(value)


def test_fit_standardizes_and_missing_values_are_flagged_not_leaked() -> None:
    encoder = TabularMLP(num_features=2, hidden_dims=[], dim=4).eval()
    rows = [torch.tensor([1.0, 10.0]), torch.tensor([3.0, math.nan]), torch.tensor([5.0, 30.0])]
    encoder.fit(rows)
    torch.testing.assert_close(encoder.mean, torch.tensor([3.0, 20.0]))
    torch.testing.assert_close(encoder.std, torch.tensor([math.sqrt(8 / 3), 10.0]))
    out = encoder(encoder.preprocess(rows)).pooled
    assert torch.isfinite(out).all()
    # a missing value reads as the column mean plus its indicator, whatever the mean is
    as_mean = encoder(encoder.preprocess([torch.tensor([3.0, 20.0])])).pooled
    indicator = encoder.net[0].weight[:, 3]
    torch.testing.assert_close(out[1], as_mean[0] + indicator)


def test_statistics_travel_with_the_weights() -> None:
    encoder = TabularMLP(num_features=2)
    encoder.fit([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])])
    again = TabularMLP(num_features=2)
    again.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(again.mean, torch.tensor([2.0, 4.0]))


def test_wrong_number_of_columns_names_the_row() -> None:
    encoder = TabularMLP(num_features=3)
    with pytest.raises(DataError, match="row 1 has 2 columns, expected num_features=3"):
        encoder.preprocess([torch.zeros(3), torch.zeros(2)])
