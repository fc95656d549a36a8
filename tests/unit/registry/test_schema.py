from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from finalmile.arrow.frames import tensor_array
from finalmile.errors import SchemaError
from finalmile.schema import Column, Schema, SchemaValidator, expand_tensor, infer_schema

SCHEMA = Schema(
    inputs=[
        Column(name="amount", dtype="float32"),
        Column(name="count", dtype="int64"),
        Column(name="country", dtype="string"),
        Column(name="embedding", dtype="float32", shape=(3,)),
    ]
)


def good_table(rows: int = 2) -> pa.Table:
    return pa.table(
        {
            "amount": pa.array([1.5] * rows, pa.float32()),
            "count": pa.array([1] * rows, pa.int64()),
            "country": pa.array(["fr"] * rows),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * rows, np.float32)), 3),
        }
    )


def test_matching_table_passes_through_in_schema_order() -> None:
    table = good_table().select(["country", "amount", "embedding", "count"]).append_column("extra", pa.array([1, 2]))
    out = SchemaValidator(SCHEMA).conform(table)
    assert out.column_names == ["amount", "count", "country", "embedding"]
    assert out.schema.equals(SCHEMA.input_arrow_schema())


def test_safe_casts_are_applied() -> None:
    table = good_table().set_column(0, "amount", pa.array([1, 2], pa.int64()))
    table = table.set_column(1, "count", pa.array([3.0, 4.0]))
    table = table.set_column(3, "embedding", pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int64())))
    out = SchemaValidator(SCHEMA).conform(table)
    assert out.column("amount").to_pylist() == [1.0, 2.0]
    assert out.column("count").to_pylist() == [3, 4]
    assert out.column("embedding").to_pylist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_every_offending_column_is_named_with_what_was_expected() -> None:
    table = pa.table(
        {
            "amount": pa.array(["a", "b"]),  # wrong type
            "count": pa.array([1.5, 2.0]),  # cannot cast to int64 safely
            "embedding": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32())),  # wrong shape
        }
    )  # country missing
    with pytest.raises(SchemaError) as err:
        SchemaValidator(SCHEMA).conform(table)
    problems = err.value.problems
    assert len(problems) == 4
    assert "column 'amount': expected float32, got string" in problems
    assert any(p.startswith("column 'count': expected int64, got float64") for p in problems)
    assert "column 'country': missing (expected string)" in problems
    assert any(p.startswith("column 'embedding': expected shape (3,)") for p in problems)
    assert err.value.status_code == 422


def test_scalar_given_for_a_tensor_and_list_given_for_a_scalar() -> None:
    schema = Schema(inputs=[Column(name="t", dtype="float32", shape=(2,)), Column(name="s", dtype="float64")])
    table = pa.table({"t": pa.array([1.0]), "s": pa.array([[1.0, 2.0]])})
    with pytest.raises(SchemaError) as err:
        SchemaValidator(schema).conform(table)
    assert "column 't': expected a tensor of shape (2,) (float32), got scalar float64" in err.value.problems
    assert "column 's': expected a scalar float64, got a list" in err.value.problems


def test_undeclared_inputs_accept_any_table() -> None:
    table = pa.table({"anything": [1, 2]})
    assert SchemaValidator(Schema(inputs=None)).conform(table) is table


def test_infer_schema_from_a_sample_keeps_types_and_tensor_shapes() -> None:
    schema = infer_schema(good_table())
    assert [(c.name, c.dtype, c.shape) for c in schema.inputs or []] == [
        ("amount", "float32", ()),
        ("count", "int64", ()),
        ("country", "string", ()),
        ("embedding", "float32", (3,)),
    ]
    assert Schema.model_validate(schema.model_dump(mode="json")) == schema


def test_a_tensor_expands_to_the_schemas_named_columns_and_types() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    chunked = pa.chunked_array([tensor_array(matrix[:1]), tensor_array(matrix[1:])])
    same = Schema.model_validate({"inputs": [{"name": n, "dtype": "float64"} for n in "abc"]})
    table = expand_tensor(pa.table({"input": chunked}), same)
    assert table.column_names == ["a", "b", "c"] and table.schema.field("a").type == pa.float64()
    assert table.column("b").to_pylist() == [1.0, 4.0, 7.0, 10.0]
    mixed = Schema.model_validate(
        {
            "inputs": [
                {"name": "a", "dtype": "float64"},
                {"name": "b", "dtype": "float32"},
                {"name": "c", "dtype": "float64"},
            ]
        }
    )
    table = expand_tensor(pa.table({"input": chunked}), mixed)
    assert table.schema.field("b").type == pa.float32() and table.column("c").to_pylist() == [2.0, 5.0, 8.0, 11.0]


def test_a_schema_seen_before_takes_the_same_path_and_still_refuses_nulls() -> None:
    """The validator remembers what to do with each schema it has seen; the values are checked every time."""
    numeric = Schema(inputs=[Column(name=n, dtype="float64") for n in ("a", "b", "c")])
    validator = SchemaValidator(numeric)

    def rows(a: list[float | None]) -> pa.Table:  # float32, reordered, one extra column: how V2 clients send
        return pa.table(
            {"c": pa.array([3.0] * len(a), pa.float32()), "x": [1] * len(a), "a": pa.array(a, pa.float32()),
             "b": pa.array([2.0] * len(a), pa.float32())}
        )  # fmt: skip

    for _ in range(3):
        out = validator.conform(rows([1.0, 2.0]))
        assert out.column_names == ["a", "b", "c"] and out.column("a").to_pylist() == [1.0, 2.0]
    with pytest.raises(SchemaError, match=r"row 1, column 'a': missing or null"):
        validator.conform(rows([1.0, None]))  # the same schema as the tables before it
    with pytest.raises(SchemaError, match="column 'b': missing"):
        validator.conform(rows([1.0]).drop_columns(["b"]))
    assert validator.conform(rows([4.0])).column("a").to_pylist() == [4.0]
