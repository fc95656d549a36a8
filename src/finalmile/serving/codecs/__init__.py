"""Wire formats at the edge: one `Codec` class per format, chosen by route and content type in `codec_for`."""

from __future__ import annotations

from finalmile.errors import BadRequestError
from finalmile.serving.codecs.arrow import ArrowCodec
from finalmile.serving.codecs.base import ARROW_STREAM, Codec, Decoded
from finalmile.serving.codecs.records import RecordsCodec
from finalmile.serving.codecs.v2 import V2Codec

__all__ = ["ARROW_STREAM", "Codec", "Decoded", "codec_for"]

_V2 = V2Codec()
_RECORDS: dict[str, Codec] = {"application/json": RecordsCodec(), "": RecordsCodec(), ARROW_STREAM: ArrowCodec()}


def codec_for(route: str, content_type: str | None) -> Codec:
    """The codec for a route (`v2` or `records`) and a request's content type; a V2 route speaks only V2."""
    if route == "v2":
        return _V2
    kind = (content_type or "").split(";")[0].strip().lower()
    codec = _RECORDS.get(kind)
    if codec is None:
        raise BadRequestError(f"unsupported content type {kind!r}: use application/json or {ARROW_STREAM}")
    return codec
