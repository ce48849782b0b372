"""The published JSON Schemas: current, valid, and in agreement with the pydantic models."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from processor.pipeline.decode import parse_json
from schemas import ALL_MODELS, DeadLetterReason, DeadLetterV1, TransactionV1
from schemas.export import DEFAULT_DIR, export, render
from schemas.outputs import SourceRef

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "json"


def _schema(name: str) -> dict[str, object]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema(name))


def _transaction(amount: object = "10.10") -> TransactionV1:
    return TransactionV1.model_validate(
        {
            "event_id": "t-1",
            "occurred_at": "2024-05-01T12:00:00.123Z",
            "account_id": "acct-9",
            "amount": amount,
            "currency": "EUR",
            "merchant": {"name": "Bakery", "category": "food", "country": "DE"},
            "customer": {"lat": 52.5, "lon": 13.4, "birth_year": 1980},
            "attributes": {"amount_7d_mean": 12.25},
        }
    )


def test_schema_files_on_disk_are_up_to_date() -> None:
    rendered = render()

    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}

    assert sorted(on_disk) == sorted(rendered), "run `processor schemas` to regenerate"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run `processor schemas`"


def test_export_writes_one_file_per_model(tmp_path: Path) -> None:
    written = export(tmp_path)

    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in ALL_MODELS)
    assert DEFAULT_DIR == SCHEMA_DIR
    for path in written:
        assert json.loads(path.read_text())["$id"] == path.name


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_exported_schema_is_a_valid_json_schema(name: str) -> None:
    schema = _schema(name)

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False


def test_dumped_transaction_validates_against_published_schema() -> None:
    dumped = _transaction().model_dump(mode="json")

    errors = list(_validator("transaction.v1").iter_errors(dumped))

    assert errors == []
    assert dumped["amount"] == "10.10"
    assert dumped["type"] == "transaction"
    assert dumped["version"] == 1


@pytest.mark.parametrize(
    "amount", ["10.10", "0.000001", "-3.50", "123456789012.120000", "100", "0"]
)
def test_money_is_written_as_a_string_with_its_exact_digits(amount: str) -> None:
    dumped = _transaction(Decimal(amount)).model_dump(mode="json")

    assert dumped["amount"] == amount
    assert json.loads(_transaction(amount).model_dump_json())["amount"] == amount


@pytest.mark.parametrize(("number", "plain"), [("1e3", "1000"), ("1.5E+2", "150")])
def test_money_from_exponent_number_is_written_as_plain_decimal(number: str, plain: str) -> None:
    amount = parse_json(number)
    assert isinstance(amount, Decimal)

    dumped = _transaction(amount).model_dump(mode="json")

    assert dumped["amount"] == plain
    assert list(_validator("transaction.v1").iter_errors(dumped)) == []


def test_schema_refuses_what_the_model_refuses() -> None:
    validator = _validator("transaction.v1")
    good = _transaction().model_dump(mode="json")

    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "unknown": 1})
    assert not validator.is_valid({**good, "currency": "eur"})
    assert not validator.is_valid({**good, "amount": "1,5"})
    assert not validator.is_valid({k: v for k, v in good.items() if k != "event_id"})


def test_dumped_dead_letter_validates_against_published_schema() -> None:
    record = DeadLetterV1(
        reason=DeadLetterReason.NOT_JSON,
        detail="Expecting value at line 1 col 1",
        source=SourceRef(topic="transactions.raw", partition=2, offset=41, timestamp_ms=None),
        key_b64=None,
        value_b64=base64.b64encode(b"\x00garbage").decode(),
        value_bytes=8,
        value_truncated=False,
        processor_version="0.1.0",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
    )

    dumped = json.loads(record.model_dump_json())

    assert list(_validator("dead_letter.v1").iter_errors(dumped)) == []
    assert dumped["reason"] == "not_json"
    assert not _validator("dead_letter.v1").is_valid({**dumped, "reason": "other"})


def test_dead_letter_reasons_are_the_closed_set() -> None:
    assert [r.value for r in DeadLetterReason] == [
        "not_utf8",
        "not_json",
        "empty_payload",
        "too_large",
        "unknown_type",
        "schema_invalid",
        "inference_failed",
        "output_rejected",
    ]


def test_published_dead_letter_schema_lists_the_same_reasons() -> None:
    schema = _schema("dead_letter.v1")

    enum = schema["$defs"]["DeadLetterReason"]["enum"]

    assert enum == [r.value for r in DeadLetterReason]
