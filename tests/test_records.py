"""Output records: dead letters keep the original bytes; embeddings decode back to the vector."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from processor import __version__
from processor.pipeline.records import (
    MAX_DEAD_LETTER_VALUE,
    Origin,
    dead_letter,
    encode_embedding,
)
from schemas import DeadLetterReason, DeadLetterV1

CONSUMED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _origin(
    key: bytes | None = b"\x00acct-7\xff", timestamp_ms: int | None = 1714564800000
) -> Origin:
    return Origin(
        topic="transactions.raw",
        partition=3,
        offset=1234,
        timestamp_ms=timestamp_ms,
        key=key,
        consumed_at=CONSUMED_AT,
    )


def _vector(dim: int = 384, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def test_dead_letter_keeps_the_original_bytes_and_key() -> None:
    value = b"\xff\xfe not utf-8 \x00\xed\xa0\x80"

    record = dead_letter(_origin(), value, DeadLetterReason.NOT_UTF8, "byte 0: invalid start")

    assert record.value_b64 is not None
    assert base64.b64decode(record.value_b64) == value
    assert record.key_b64 is not None
    assert base64.b64decode(record.key_b64) == b"\x00acct-7\xff"
    assert record.value_bytes == len(value)
    assert record.value_truncated is False
    assert record.reason is DeadLetterReason.NOT_UTF8
    assert record.detail == "byte 0: invalid start"
    assert record.processor_version == __version__


def test_dead_letter_points_at_the_source_record() -> None:
    record = dead_letter(_origin(), b"{}", DeadLetterReason.SCHEMA_INVALID, "x")

    assert record.source.topic == "transactions.raw"
    assert record.source.partition == 3
    assert record.source.offset == 1234
    assert record.source.timestamp_ms == 1714564800000


def test_dead_letter_survives_a_json_roundtrip() -> None:
    value = bytes(range(256))
    record = dead_letter(_origin(), value, DeadLetterReason.NOT_JSON, "Expecting value")

    again = DeadLetterV1.model_validate_json(record.model_dump_json())

    assert again == record
    assert base64.b64decode(again.value_b64 or "") == value
    assert json.loads(record.model_dump_json())["reason"] == "not_json"


def test_dead_letter_of_oversize_value_keeps_a_marked_prefix() -> None:
    value = b"a" * MAX_DEAD_LETTER_VALUE + b"TAIL"

    record = dead_letter(_origin(), value, DeadLetterReason.TOO_LARGE, "too big")

    assert record.value_truncated is True
    assert record.value_bytes == len(value)
    kept = base64.b64decode(record.value_b64 or "")
    assert kept == value[:MAX_DEAD_LETTER_VALUE]
    assert b"TAIL" not in kept


def test_dead_letter_at_exactly_the_limit_is_not_truncated() -> None:
    value = b"b" * MAX_DEAD_LETTER_VALUE

    record = dead_letter(_origin(), value, DeadLetterReason.TOO_LARGE, "")

    assert record.value_truncated is False
    assert base64.b64decode(record.value_b64 or "") == value


def test_dead_letter_without_key_or_value() -> None:
    record = dead_letter(
        _origin(key=None, timestamp_ms=None), None, DeadLetterReason.OUTPUT_REJECTED, "refused"
    )

    assert record.key_b64 is None
    assert record.value_b64 is None
    assert record.value_bytes == 0
    assert record.value_truncated is False
    assert record.source.timestamp_ms is None


def test_dead_letter_of_empty_value_is_empty_not_missing() -> None:
    record = dead_letter(_origin(key=b""), b"", DeadLetterReason.EMPTY_PAYLOAD, "empty")

    assert record.value_b64 == ""
    assert record.key_b64 == ""
    assert record.value_bytes == 0


def test_dead_letter_detail_is_cut_to_the_schema_limit() -> None:
    record = dead_letter(_origin(), b"x", DeadLetterReason.SCHEMA_INVALID, "é" * 10_000)

    assert len(record.detail) == 4096
    assert record.detail == "é" * 4096


def test_float_list_embedding_is_the_vector_rounded_to_six_places() -> None:
    vector = _vector()

    embedding = encode_embedding(vector, "float_list")

    assert embedding is not None
    assert embedding.encoding == "float_list"
    assert embedding.dim == 384
    assert embedding.data is None
    assert embedding.values is not None
    np.testing.assert_allclose(np.array(embedding.values), vector, rtol=0, atol=5e-7)
    assert all(round(v, 6) == v for v in embedding.values)


def test_base64_f32_embedding_decodes_back_exactly() -> None:
    vector = _vector()

    embedding = encode_embedding(vector, "base64_f32")

    assert embedding is not None
    assert embedding.encoding == "base64_f32"
    assert embedding.dim == 384
    assert embedding.values is None
    decoded = np.frombuffer(base64.b64decode(embedding.data or ""), dtype="<f4")
    np.testing.assert_array_equal(decoded, vector)


def test_base64_f16_embedding_decodes_back_within_half_precision() -> None:
    vector = _vector()

    embedding = encode_embedding(vector, "base64_f16")

    assert embedding is not None
    assert embedding.encoding == "base64_f16"
    assert embedding.dim == 384
    raw = base64.b64decode(embedding.data or "")
    assert len(raw) == 2 * 384
    decoded = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    np.testing.assert_allclose(decoded, vector, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("encoding", ["base64_f32", "base64_f16"])
def test_base64_embedding_of_float64_input_is_little_endian(encoding: str) -> None:
    vector = np.array([1.0, -2.5, 0.0], dtype=">f8")
    dtype = "<f2" if encoding == "base64_f16" else "<f4"

    embedding = encode_embedding(vector, encoding)

    assert embedding is not None
    decoded = np.frombuffer(base64.b64decode(embedding.data or ""), dtype=dtype)
    assert decoded.tolist() == [1.0, -2.5, 0.0]


def test_no_embedding_when_encoding_is_none() -> None:
    assert encode_embedding(_vector(), "none") is None
