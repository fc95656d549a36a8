from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from finalmile.errors import InvalidInputError
from finalmile.pipelines.batch import Batch
from finalmile.pipelines.loaded import RequestResult, split_batch
from finalmile.serving.codecs import arrow, records, v2


def answer(table: pa.Table) -> RequestResult:
    """A request's result holding `table` alone (no batch shared with others)."""
    return RequestResult("r", "p", 1, table, [(None, ())] * table.num_rows, {}, {}, {})


def test_v2_json_tensors_become_columns() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
                {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                {"name": "n", "shape": [2], "datatype": "INT64", "data": [7, 8]},
            ],
        }
    )
    request = v2.decode(body)
    assert request.id == "r1"
    assert request.table.schema.field("x").type == pa.list_(pa.float32(), 3)
    assert request.table.column("s").to_pylist() == ["a", "b"]
    assert request.table.column("n").to_pylist() == [7, 8]


def test_v2_binary_extension_round_trip() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = [b"hi", b"there"]
    raw_words = b"".join(struct.pack("<I", len(w)) + w for w in words)
    head = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
                {"name": "w", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw_words)}},
            ],
            "outputs": [{"name": "x", "parameters": {"binary_data": True}}, {"name": "w"}],
        }
    )
    request = v2.decode(head + x.tobytes() + raw_words, len(head))
    assert request.table.column("w").to_pylist() == ["hi", "there"]
    body, headers = v2.encode(answer(request.table), request)
    length = int(headers[v2.HEADER_LENGTH])
    response = orjson.loads(body[:length])
    out_x, out_w = response["outputs"]
    assert out_x["parameters"]["binary_data_size"] == x.nbytes and "data" not in out_x
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype=np.float32).reshape(2, 3), x)
    assert out_w["data"] == ["hi", "there"] and out_w["datatype"] == "BYTES"
    assert response["model_name"] == "p" and response["parameters"]["pipeline_version"] == 1


def test_requests_sharing_a_batch_each_encode_their_own_rows_as_if_alone() -> None:
    outputs = pa.table(
        {
            "score": pa.array([0.1, 0.2, 0.3, 0.4]),
            "label": pa.array(["a", "b", "c", "d"]),
            "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8, dtype=np.float32)), 2),
        }
    )
    batch = Batch.start(outputs)
    batch.request_ids = ["r0", "r1", "r2"]
    shared = split_batch("p", 1, batch, [(0, 1), (1, 2), (3, 1)])
    v2_request = v2.decode(orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}))
    for result in shared:
        alone = answer(result.table)
        assert result.outputs is not None  # the batch's conversion, sliced
        assert v2.encode(result, v2_request)[0] == v2.encode(alone, v2_request)[0].replace(b'"r"', b'"%s"' % (
            result.request_id.encode()), 1)  # fmt: skip
        assert records.encode(result) == records.encode(alone)
    assert orjson.loads(records.encode(shared[1])) == [
        {"score": 0.2, "label": "b", "probabilities": [2.0, 3.0]},
        {"score": 0.3, "label": "c", "probabilities": [4.0, 5.0]},
    ]
    carried = pickle.loads(pickle.dumps(shared[1]))  # as a Ray replica's answer: its own rows, not the batch's
    assert carried.outputs is None and carried.records() == shared[1].records()
    tensors = {
        name: (shape, values.tolist(), items) for name, _, shape, values, items in v2.output_tensors(shared[1], None)
    }
    assert tensors == {
        "score": ([2], [0.2, 0.3], [0.2, 0.3]),
        "label": ([2], ["b", "c"], ["b", "c"]),
        "probabilities": ([2, 2], [2, 3, 4, 5], None),  # single floats: JSON prints them from numpy, as they are
    }
    single = answer(pa.table({"p": pa.array([0.1, 2.5], pa.float32()), "h": pa.array([0.1, 1.0], pa.float16())}))
    body = v2.encode(single, v2_request)[0]
    half = orjson.dumps(np.array([0.1, 1.0], np.float16), option=orjson.OPT_SERIALIZE_NUMPY)  # as it always printed
    assert b'"data":[0.1,2.5]' in body and b'"data":' + half in body, body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', "needs 2 values, got 1"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]}', "unknown datatype 'FP128'"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', "does not fit datatype FP32"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}', "non-negative integers"),
        (b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", "data": []}]}', "empty batch"),
        (
            b'{"inputs": [{"name": "x", "shape": [2, 0], "datatype": "FP32", "data": []}]}',
            "input 'x': shape \\[2, 0\\]",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1, 3, 0], "datatype": "FP32", "data": []}]}', "at least one value"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
            b' {"name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
            "batch size 2 differs",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}',
            "exceeds the binary data",
        ),
    ],
)
def test_v2_bad_requests_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        v2.decode(body)


def test_records_and_arrow_round_trip() -> None:
    table = records.decode(b'[{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}]')
    assert table.column_names == ["a", "b"]
    assert orjson.loads(records.encode(answer(table))) == [{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}]
    assert arrow.decode(arrow.encode(table)).equals(table)
    for bad, message in [(b"{}", "JSON list of records"), (b"[]", "empty batch"), (b"[1, 2]", "JSON list of records")]:
        with pytest.raises(InvalidInputError, match=message):
            records.decode(bad)
    with pytest.raises(InvalidInputError, match="not an Arrow IPC stream"):
        arrow.decode(b"nonsense")


def test_float_records_decode_as_a_named_tensor_and_anything_else_as_columns() -> None:
    from finalmile.arrow.tensors import expand_named_tensor, named_tensor_parts

    body = b'[{"b": 1.5, "a": -2.0}, {"b": 3.25, "a": 0.5}]'
    parts = named_tensor_parts(records.decode(body))
    assert parts is not None and parts[1] == ["b", "a"]
    assert expand_named_tensor(records.decode(body)).equals(pa.Table.from_pylist(orjson.loads(body)))
    for other in (b'[{"b": 1.5, "a": 2}]', b'[{"b": 1.5, "a": null}]', b'[{"b": 1.5, "a": 2.0}, {"a": 1.0, "b": 2.0}]',
                  b'[{"b": 1.5}]', b'[{"b": 1.5, "a": true}]'):  # fmt: skip
        assert named_tensor_parts(records.decode(other)) is None, other  # the general path, its types as sent
    assert records.decode(b'[{"b": 1.5, "a": 2}]').column("a").type == pa.int64()


def test_named_one_dimensional_inputs_decode_as_a_named_tensor() -> None:
    from finalmile.arrow.tensors import expand_named_tensor, named_tensor_parts

    body = orjson.dumps(
        {
            "inputs": [
                {"name": n, "shape": [2], "datatype": "FP32", "data": d} for n, d in (("b", [1, 2]), ("a", [3, 4]))
            ]
        }
    )
    table = v2.decode(body).table
    matrix, names = named_tensor_parts(table)  # type: ignore[misc]
    assert names == ["b", "a"] and matrix.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    expanded = expand_named_tensor(table)
    assert expanded.column_names == ["b", "a"] and expanded.column("a").to_pylist() == [3.0, 4.0]
    # Anything irregular takes the tensor-by-tensor path and its precise errors.
    ragged = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                {"name": "b", "shape": [2], "datatype": "FP32", "data": [1]},
            ]
        }
    )
    with pytest.raises(InvalidInputError, match="input 'b': shape \\[2\\] needs 2 values, got 1"):
        v2.decode(ragged)


def _read(decode: Callable[[], Any]) -> pa.Table | str:
    """Decoded rows as ordinary columns, or the message of the error decoding them raised."""
    from finalmile.arrow.tensors import expand_named_tensor

    try:
        return expand_named_tensor(decode())
    except InvalidInputError as exc:
        return exc.message


def _same(got: pa.Table | str, expected: pa.Table | str) -> bool:
    return got == expected if isinstance(expected, str) else isinstance(got, pa.Table) and got.equals(expected)


@pytest.mark.parametrize(
    "inputs",
    [
        [{"name": n, "shape": [2], "datatype": "FP32", "data": [1.5, -2]} for n in ("b", "a")],
        [{"name": n, "shape": [1], "datatype": "INT64", "data": [2**62 + 1]} for n in ("x", "y")],
        [{"name": n, "shape": [1], "datatype": "FP16", "data": [0.5]} for n in ("x", "y")],
        [{"name": "t", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5.5, 6]}],
        [{"name": "t", "shape": [1, 2], "datatype": "INT8", "data": [300, 1]}],  # does not fit: the checks say so
        [{"name": "t", "shape": [1, 2], "datatype": "BOOL", "data": [1, 0]}],
        [{"name": n, "shape": [1], "datatype": "BOOL", "data": [1]} for n in ("x", "y")],
        [{"name": "", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
        [{"name": n, "shape": [1], "datatype": "FP32", "data": [1]} for n in ("x", "x")],
        [
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"content_type": "np"}},
            {"name": "y", "shape": [1], "datatype": "FP32", "data": [2]},
        ],  # fmt: skip
        [
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "y", "shape": [1], "datatype": "FP64", "data": [2]},
        ],  # fmt: skip
    ],
)
def test_typed_v2_tensors_read_as_the_checked_path_reads_their_json(inputs: list[dict[str, Any]]) -> None:
    """A body of the protocol's types is read at once (`V2Tensor`); it must give what every field's checks give,
    and so must the same tensors built as the gRPC service builds them."""
    checked = _read(lambda: v2.checked_rows(inputs))
    assert _same(_read(lambda: v2.decode(orjson.dumps({"inputs": inputs})).table), checked)
    assert _same(_read(lambda: v2.tensors_table([v2.V2Tensor(**t) for t in inputs])), checked)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw"),
    [
        ("FP32", [2, 3], np.arange(6, dtype="<f4").tobytes()),
        ("FP16", [1, 2], np.array([0.5, 2], dtype="<f2").tobytes()),
        ("INT64", [1, 2], np.array([2**62 + 1, -3], dtype="<i8").tobytes()),
        ("BOOL", [1, 2], b"\x01\x00"),
        ("FP32", [2, 3], np.arange(5, dtype="<f4").tobytes()),  # too few values
        ("FP32", [1, 2], b"\x00" * 7),  # not a whole number of floats
    ],
)
def test_raw_tensor_contents_read_as_the_checked_path_reads_them(datatype: str, shape: list[int], raw: bytes) -> None:
    """One tensor's raw contents (gRPC's, or the binary extension's) are read at once; as the checks would read them."""
    tensor: dict[str, Any] = {"name": "t", "datatype": datatype, "shape": shape}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    assert _same(
        _read(lambda: v2.tensors_table([v2.V2Tensor(**tensor)], raw)), _read(lambda: v2.checked_rows([tensor], raw))
    )


def test_provenance_names_each_variant_and_model_once_in_row_order_whatever_was_answered_before() -> None:
    from finalmile.http.app import provenance_headers

    table = pa.table({"y": [1.0, 2.0, 3.0]})
    routes = [("b", ("m:2",)), ("a", ("m:1", "n:1")), ("b", ("m:2",))]
    one = RequestResult("r1", "p", 4, table.slice(0, 1), routes[1:2], {}, {}, {})
    assert provenance_headers(one) == {
        "finalmile-request-id": "r1", "finalmile-pipeline-version": "4", "finalmile-model-versions": "m:1,n:1",
        "finalmile-variants": "a",
    }  # fmt: skip
    three = RequestResult("r2", "p", 4, table, routes, {}, {}, {})
    for _ in range(2):  # the second answer is the remembered one: the same, with its own request id
        assert provenance_headers(three) == {
            "finalmile-request-id": "r2", "finalmile-pipeline-version": "4", "finalmile-model-versions": "m:2,m:1,n:1",
            "finalmile-variants": "b,a",
        }  # fmt: skip
    plain = RequestResult("r3", "p", 5, table.slice(0, 1), [(None, ("m:1",))], {}, {}, {})
    assert provenance_headers(plain) == {
        "finalmile-request-id": "r3",
        "finalmile-pipeline-version": "5",
        "finalmile-model-versions": "m:1",
    }
