"""Open Inference Protocol (V2) REST: JSON tensors and the binary tensor data extension.

Binary extension: the body is a JSON header of `Inference-Header-Content-Length` bytes followed by raw tensors,
little-endian, row-major, in the order of the inputs that declare `parameters.binary_data_size`; BYTES elements
are each prefixed by their 4-byte little-endian length.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa

from finalmile.arrow.frames import require_rows, tensor_array
from finalmile.arrow.tensors import NamedRows, Rows, TensorRows
from finalmile.errors import BadRequestError, InvalidInputError
from finalmile.serving.codecs.base import Answer, Decoded

HEADER_LENGTH = "inference-header-content-length"
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
DATATYPE_NAMES = {np.dtype(v).name: k for k, v in DATATYPES.items() if v is not object}
_DATATYPE_OF = {np.dtype(v): k for k, v in DATATYPES.items() if v is not object}


@dataclass
class V2Request:
    """A decoded V2 request: its rows, and the id and outputs it asked for (echoed in the answer)."""

    table: Rows
    id: str | None = None
    outputs: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)


def is_number(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also takes '²' and other digits `int()` refuses."""
    return text.isascii() and text.isdigit()


def version_number(version: str | None) -> int | None:
    """A pipeline version named in a route or a request (the protocol's versions are strings), as a number."""
    if not version:
        return None
    if not is_number(version):
        raise BadRequestError(f"version: a pipeline version is a number, got {version!r}", {"field": "version"})
    return int(version)


class V2Tensor(msgspec.Struct, gc=False):
    """An input tensor as the protocol shapes it, typed: a body (or a gRPC request) that fits these types is read
    without a Python check per field, and anything else is read as plain JSON and checked field by field."""

    name: str
    datatype: str
    shape: list[int]
    data: list[int | float] | None = None
    parameters: dict[str, Any] | None = None


class _Body(msgspec.Struct, gc=False):
    inputs: list[V2Tensor]
    id: Any = None
    outputs: Any = None
    parameters: Any = None


_BODY = msgspec.json.Decoder(_Body)


def decode(body: bytes, header_length: int | None = None) -> V2Request:
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)"
        )
    head, binary = (body[:header_length], body[header_length:]) if header_length else (body, b"")
    try:
        typed: _Body | None = _BODY.decode(head)
    except msgspec.DecodeError:  # not of the protocol's types: read as JSON, so the checks name what is wrong
        typed = None
    if typed is not None and typed.inputs:
        request: dict[str, Any] = {"id": typed.id, "outputs": typed.outputs, "parameters": typed.parameters}
        outputs, binary_outputs = _requested_outputs(request)
        table = tensors_table(typed.inputs, binary)
    else:
        try:
            request = orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"invalid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise InvalidInputError("the request must be a JSON object with an 'inputs' list")
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInputError("'inputs': expected a non-empty list of tensors")
        outputs, binary_outputs = _requested_outputs(request)
        table = checked_rows(inputs, binary)
    request_id = request.get("id")
    return V2Request(table, str(request_id) if request_id is not None else None, outputs, binary_outputs)


def tensors_table(tensors: list[V2Tensor], binary: bytes = b"") -> Rows:
    """The rows of typed V2 input tensors (`binary`: the raw data of those that declare
    `parameters.binary_data_size`, in order): the usual bodies read at once, anything else by `checked_rows`."""
    rows = _usual_rows(tensors, binary)
    if rows is not None:
        return rows
    return checked_rows([msgspec.structs.asdict(t) for t in tensors], binary)


def checked_rows(inputs: list[Any], binary: bytes = b"") -> Rows:
    """The rows of V2 input tensors as plain JSON values (dicts as in the body), every field checked and any problem
    named. Every transport's tensors end here unless `_usual_rows` reads them, so every one checks the same."""
    decoded: dict[str, tuple[np.ndarray, list[int]]] = {}
    offset = 0
    rows: int | None = None
    for i, tensor in enumerate(inputs):
        name, values, shape, offset = _decode_tensor(tensor, i, binary, offset)
        if name in decoded:
            raise InvalidInputError(f"input '{name}': given twice")
        if rows is not None and shape[0] != rows:
            raise InvalidInputError(f"input '{name}': batch size {shape[0]} differs from the other inputs' {rows}")
        rows = shape[0]
        decoded[name] = (values, shape)
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    if len(decoded) == 1 and rows:
        ((name, (values, shape)),) = decoded.items()
        if len(shape) > 1 and values.dtype.kind in "iuf":  # one numeric tensor: a matrix until its batch is built
            return TensorRows(values.reshape(shape[0], -1), name)
    return require_rows(pa.table({name: _to_arrow(values, shape) for name, (values, shape) in decoded.items()}))


def _usual_rows(tensors: list[V2Tensor], binary: bytes = b"") -> NamedRows | TensorRows | None:
    """The bodies V2 clients send tabular rows as — one numeric [n, k] tensor (its values in the JSON, or all of the
    binary data: gRPC's raw contents), or k one-dimensional numeric inputs of one datatype (one per feature) — read
    in one numpy call into rows (see `arrow.tensors`), as `checked_rows` would read them. None when anything is
    unusual, so `checked_rows` reports the problem precisely."""
    first = tensors[0]
    datatype, shape = first.datatype, first.shape
    dtype = DATATYPES.get(datatype)
    if dtype is None or dtype is object or not shape or min(shape) < 1:
        return None
    if len(tensors) == 1:
        if len(shape) < 2 or not first.name:
            return None
        if binary:
            if first.data is not None or first.parameters != {"binary_data_size": len(binary)}:
                return None
            values = _raw_numbers(binary, dtype)
        elif first.parameters or first.data is None:
            return None
        else:
            values = _numbers(first.data, dtype)
        if values is None or values.size != math.prod(shape) or values.dtype.kind not in "iuf":
            return None  # a tensor of booleans stays a table, as `checked_rows` makes it
        return TensorRows(_widened(values).reshape(shape[0], -1), first.name)
    if binary or len(shape) != 1:
        return None
    rows = shape[0]
    names, data = [], []
    for t in tensors:
        if t.datatype != datatype or t.shape != shape or t.parameters or t.data is None or len(t.data) != rows:
            return None
        names.append(t.name)
        data += t.data  # one flat list: numpy reads it in a third of the time of a list of lists
    if len(set(names)) != len(names) or "" in names:
        return None
    matrix = _numbers(data, dtype)
    if matrix is None:
        return None
    return NamedRows(_widened(matrix).reshape(len(tensors), rows).T, tuple(names))


def _numbers(data: list[Any], dtype: Any) -> np.ndarray | None:
    """Flat numbers as `dtype`; None where they do not fit it (`checked_rows` then says which input and why)."""
    try:
        values = np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        return None
    return values if values.ndim == 1 else None


def _raw_numbers(raw: bytes, dtype: Any) -> np.ndarray | None:
    """Raw little-endian values as `dtype`; None where the bytes are not a whole number of them."""
    if len(raw) % np.dtype(dtype).itemsize:
        return None
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)


def _decode_tensor(tensor: Any, index: int, binary: bytes, offset: int) -> tuple[str, np.ndarray, list[int], int]:
    """An input's name, flat values (checked against its datatype and shape), shape, and the binary data's offset
    after it."""
    if not isinstance(tensor, dict):
        raise InvalidInputError(f"inputs[{index}]: expected an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"inputs[{index}]: 'name' must be a non-empty string")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInputError(f"input '{name}': 'shape' must be a non-empty list of non-negative integers")
    if 0 in shape[1:]:  # rows of no values: no model takes them, and Arrow has no zero-width tensor
        raise InvalidInputError(f"input '{name}': shape {shape}: each row must hold at least one value")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInputError(
            f"input '{name}': unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    dtype = DATATYPES[datatype]
    size = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"input '{name}': 'parameters' must be an object")
    if "binary_data_size" in params:
        length = params["binary_data_size"]
        if not isinstance(length, int) or length < 0 or offset + length > len(binary):
            raise InvalidInputError(f"input '{name}': binary_data_size {length!r} exceeds the binary data sent")
        raw = binary[offset : offset + length]
        offset += length
        values = _bytes_elements(raw, name) if dtype is object else _frombuffer(raw, dtype, name)
    else:
        data = tensor.get("data")
        if data is None:
            raise InvalidInputError(f"input '{name}': 'data' is missing")
        try:
            values = np.asarray(data, dtype=dtype).reshape(-1)
        except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 300 as INT8, -1 as UINT64
            raise InvalidInputError(f"input '{name}': data does not fit datatype {datatype}: {exc}") from None
    if values.size != size:
        raise InvalidInputError(f"input '{name}': shape {shape} needs {size} values, got {values.size}")
    if dtype is object:
        values = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return name, _widened(values), shape, offset


def _widened(values: np.ndarray) -> np.ndarray:
    """FP16 as FP32: exact, and what every runtime takes (no model is compiled for half floats on a CPU)."""
    return values.astype(np.float32) if values.dtype == np.float16 else values


def _frombuffer(raw: bytes, dtype: Any, name: str) -> np.ndarray:
    values = _raw_numbers(raw, dtype)
    if values is None:
        raise InvalidInputError(f"input '{name}': {len(raw)} bytes is not a whole number of {np.dtype(dtype).name}")
    return values


def _bytes_elements(raw: bytes, name: str) -> np.ndarray:
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInputError(f"input '{name}': truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise InvalidInputError(f"input '{name}': BYTES element overruns the binary data")
        items.append(raw[pos : pos + length])
        pos += length
    return np.asarray(items, dtype=object)


def _to_arrow(values: np.ndarray, shape: list[int]) -> pa.Array:
    if len(shape) == 1:
        return pa.array(values, type=pa.string() if values.dtype == object else None)
    return tensor_array(values.reshape(shape[0], -1))


def _requested_outputs(request: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    params = request.get("parameters") or {}
    all_binary = isinstance(params, dict) and bool(params.get("binary_data_output"))
    outputs = request.get("outputs")
    if outputs is None:
        return None, {"*"} if all_binary else set()
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidInputError("'outputs': expected a list of objects with a 'name'")
    names = [o["name"] for o in outputs]
    binary = {o["name"] for o in outputs if all_binary or (o.get("parameters") or {}).get("binary_data")}
    return names, binary


V2Output = tuple[str, str, list[int], np.ndarray, list[Any] | None]
"""An output as the protocol sends it: name, V2 datatype, shape, flat values, and the values as Python numbers where
they print as they are (JSON's data), else None."""


def output_tensors(answer: Answer, requested: list[str] | None) -> list[V2Output]:
    """Each output the request asked for (all when it named none)."""
    available = answer.output_names()
    names = requested if requested is not None else available
    if requested is not None:
        missing = [n for n in names if n not in available]
        if missing:
            raise InvalidInputError(f"requested outputs {missing} do not exist; outputs are {available}")
    out = []
    for name in names:
        values, shape, items = answer.tensor(name)
        datatype = _DATATYPE_OF.get(values.dtype) or ("BYTES" if values.dtype == object else "FP64")
        out.append((name, datatype, shape, values, items))
    return out


def raw_contents(values: np.ndarray) -> bytes:
    """A tensor's values as the protocol's raw data: little-endian, row-major; BYTES length-prefixed."""
    if values.dtype == object:
        return _bytes_payload(values)
    return np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def encode(answer: Answer, request: V2Request) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and its headers (binary tensors appended when the request asked for them)."""
    all_binary = "*" in request.binary_outputs
    outputs, chunks = [], []
    for name, datatype, shape, values, items in output_tensors(answer, request.outputs):
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if all_binary or name in request.binary_outputs:
            raw = raw_contents(values)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values if items is None else items  # half and single floats as numpy prints them
        outputs.append(tensor)
    response: dict[str, Any] = {
        "model_name": answer.pipeline,
        "model_version": str(answer.version),
        "outputs": outputs,
        "parameters": answer.metadata(),
    }
    if request.id is not None:
        response["id"] = request.id
    head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def _bytes_payload(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values:
        data = v if isinstance(v, bytes) else str(v).encode()
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


class V2Codec:
    """Open Inference Protocol V2 JSON, with the binary tensor extension when the length header is sent."""

    content_type = "application/json"

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded:
        length = headers.get(HEADER_LENGTH)
        if length is not None and not is_number(length):
            raise BadRequestError(f"Inference-Header-Content-Length must be an integer, got {length!r}")
        request = decode(body, int(length) if length else None)
        return Decoded(request.table, request)

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]:
        return encode(answer, decoded.request)
