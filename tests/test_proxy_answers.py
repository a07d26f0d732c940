"""What the proxy reads of Elevate's 202 answers, fed hostile bodies directly."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest

from elevate_import_exporter.proxy.tracking import (
    MAX_PARSED_BYTES,
    accepted_import,
    answer_document,
)


def test_a_gzip_bomb_in_a_202_answer_is_not_inflated_beyond_the_cap() -> None:
    # 50 MB of zeros in under 64 KiB: inflated no further than the cap, then given up.
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = bomb.compress(b"0" * 50_000_000) + bomb.flush()
    assert len(body) <= MAX_PARSED_BYTES
    tracemalloc.start()
    try:
        assert answer_document(body, "gzip") is None
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # inflated whole, it would take 50 MB


def test_a_small_gzipped_answer_is_read() -> None:
    body = gzip.compress(json.dumps({"id": "abc-1", "type": "PRODUCTS"}).encode())
    assert answer_document(body, "GZIP ") == {"id": "abc-1", "type": "PRODUCTS"}


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"[" * 100_000 + b"]" * 100_000, ""),  # nesting beyond the parser's recursion
        (b'{"id": "\xff"}', ""),  # not UTF-8
        (b'{"id": "1"}', "br"),  # an encoding it does not read
        (b"\x1f\x8b broken gzip", "gzip"),
        (b'{"id": "1"}' + b" " * (MAX_PARSED_BYTES + 1), ""),  # too large to parse
        (b'["not", "an", "object"]', ""),
    ],
)
def test_a_body_it_cannot_or_should_not_read_gives_no_document(body: bytes, encoding: str) -> None:
    assert answer_document(body, encoding) is None


@pytest.mark.parametrize(
    "document",
    [
        {"id": "../../etc/passwd"},
        {"id": "id\nwith newline"},
        {"id": "x" * 65},
        {"id": True},
        {"id": -5},
        {"id": 1.5},
        {"id": 10**80},
        {"id": None},
        {},
    ],
)
def test_an_answer_without_a_usable_id_registers_nothing(document: dict[str, object]) -> None:
    assert accepted_import(document) is None


def test_hostile_type_text_is_made_safe_and_cut() -> None:
    found = accepted_import({"id": "ok-1", "type": "P\x00R\ud800" + "x" * 500})
    assert found is not None
    import_id, kind = found
    assert import_id == "ok-1"
    assert "\x00" not in kind
    assert "\ud800" not in kind
    assert len(kind) <= 64
