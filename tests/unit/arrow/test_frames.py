from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from finalmile.arrow.frames import table_from_arrays, to_arrow, to_numpy_dict
from finalmile.errors import InvalidInputError
from finalmile.runtimes.base import features


def test_each_frame_type_round_trips_to_its_own_type() -> None:
    pdf = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    for frame, kind in [
        (pdf, pd.DataFrame),
        (pl.from_pandas(pdf), pl.DataFrame),
        (pa.Table.from_pandas(pdf), pa.Table),
    ]:
        table, back = to_arrow(frame)
        assert table.column_names == ["a", "b"]
        assert isinstance(back(table), kind)
    table, back = to_arrow({"a": np.array([1.0, 2.0]), "m": np.arange(6.0).reshape(2, 3)})
    assert table.schema.field("m").type == pa.list_(pa.float64(), 3)
    out = back(table)
    assert out["m"].shape == (2, 3) and out["m"][1, 2] == 5.0


def test_unreadable_inputs_are_refused_clearly() -> None:
    with pytest.raises(InvalidInputError, match="cannot read a list"):
        to_arrow([1, 2, 3])
    with pytest.raises(InvalidInputError, match="different lengths"):
        table_from_arrays({"a": [1, 2], "b": [1]})


def test_features_stack_columns_or_view_a_tensor_column() -> None:
    table = pa.table({"a": pa.array([1.0, 2.0]), "b": pa.array([3, 4], pa.int32()), "c": pa.array([None, 5.0])})
    matrix = features(table)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[1, 3, np.nan], [2, 4, 5]])
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 1)])
    np.testing.assert_array_equal(features(chunked), matrix)
    tensor = table_from_arrays({"t": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(features(tensor), [[0, 1, 2], [3, 4, 5]])
    assert features(table.slice(0, 0)).shape == (0, 3)
    assert to_numpy_dict(tensor)["t"].shape == (2, 3)
