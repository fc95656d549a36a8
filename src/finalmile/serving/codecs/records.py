"""pandas-records JSON (`[{"amount": 1.0, …}, …]`, what `DataFrame.to_json(orient="records")` writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa

from finalmile.arrow.frames import require_rows
from finalmile.errors import InvalidInputError
from finalmile.serving.codecs.base import Answer, Decoded


def decode(body: bytes) -> pa.Table:
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"invalid JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidInputError("expected a JSON list of records (objects), as pandas writes with orient='records'")
    try:
        return require_rows(pa.Table.from_pylist(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"records do not form a table: {exc}") from None


def encode(table: pa.Table) -> bytes:
    rows: list[dict[str, Any]] = table.to_pylist()
    return orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)


class RecordsCodec:
    """pandas-records JSON in, the same shape out."""

    content_type = "application/json"

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded:
        return Decoded(decode(body))

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]:
        return encode(answer.table), {"content-type": self.content_type}
