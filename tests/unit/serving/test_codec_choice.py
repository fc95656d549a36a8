"""Codecs are chosen in one place, by route and content type."""

from __future__ import annotations

import pytest

from finalmile.errors import BadRequestError
from finalmile.serving.codecs import ARROW_STREAM, codec_for
from finalmile.serving.codecs.arrow import ArrowCodec
from finalmile.serving.codecs.records import RecordsCodec
from finalmile.serving.codecs.v2 import V2Codec


@pytest.mark.parametrize(
    ("route", "content_type", "codec"),
    [
        ("v2", "application/json", V2Codec),
        ("v2", "application/octet-stream", V2Codec),
        ("v2", None, V2Codec),
        ("records", "application/json; charset=utf-8", RecordsCodec),
        ("records", None, RecordsCodec),
        ("records", ARROW_STREAM, ArrowCodec),
    ],
)
def test_codec_by_route_and_content_type(route: str, content_type: str | None, codec: type) -> None:
    assert isinstance(codec_for(route, content_type), codec)


def test_an_unknown_content_type_is_a_400_naming_it() -> None:
    with pytest.raises(BadRequestError, match="unsupported content type 'text/csv'") as raised:
        codec_for("records", "text/csv")
    assert raised.value.status_code == 400


def test_the_v2_length_header_must_be_a_number() -> None:
    with pytest.raises(BadRequestError, match="Inference-Header-Content-Length must be an integer"):
        V2Codec().decode(b"{}", {"inference-header-content-length": "ten"})
