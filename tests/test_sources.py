"""Source adapters: every shipped data file becomes schema-valid events with exact amounts."""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from processor.sources import fdh_protocol_split, open_source, read_sec, read_sparkov, read_sroie
from processor.sources.base import exact_amount
from processor.sources.fdh import FEATURES
from processor.sources.sroie import FALLBACK_DATE, parse_receipt_date, sroie_event
from schemas.events import DocumentV1, TransactionV1

REPO = Path(__file__).parents[1]
DATA = REPO / "data"
SPARKOV_FILES = {
    "fraudTrain_first5039rows.csv.gz": (5039, 22),
    "fraudTest_first5116rows.csv.gz": (5116, 18),
    "fraudTest_1072fraud_1072normal.csv.gz": (2144, 1072),
}
SROIE_FILES = {"sroie_train_metadata.jsonl.gz": 626, "sroie_test_metadata.jsonl.gz": 361}
SEC_8K = DATA / "sec" / "sec_8k_items.jsonl.gz"
FDH_TRAIN_WEEK_ROWS = 66_928  # SOURCE.md: transactions_2018-07-11_to_2018-07-17.csv.gz
FDH_TRAIN_WEEK_FRAUDS = 633
FDH_TEST_WEEK_ROWS = 67_240  # SOURCE.md: transactions_2018-07-25_to_2018-07-31.csv.gz


def shared_data_dir() -> Path:
    """The project's shared (not shipped) data folder next to the repository."""
    return Path(__file__).parents[1].parent / "shared" / "data"


def fdh_dir() -> Path:
    folder = shared_data_dir() / "fdh-simulated-transactions"
    if not folder.is_dir():
        pytest.skip(f"FDH data not found at {folder}")
    return folder


def json_round_trip(event: dict) -> dict:
    return json.loads(json.dumps(event))


def csv_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def jsonl_records(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize("name", sorted(SPARKOV_FILES))
def test_every_sparkov_event_validates_as_transaction_v1(name: str) -> None:
    events = list(read_sparkov(DATA / "sparkov" / name))
    assert len(events) == SPARKOV_FILES[name][0]
    for item in events:
        model = TransactionV1.model_validate(json_round_trip(item.event))
        assert item.key == model.account_id


@pytest.mark.parametrize("name", sorted(SPARKOV_FILES))
def test_sparkov_amounts_labels_and_times_match_the_csv_text(name: str) -> None:
    path = DATA / "sparkov" / name
    rows = csv_rows(path)
    events = list(read_sparkov(path))
    assert [e.event["amount"] for e in events] == [row["amt"] for row in rows]
    assert [e.label for e in events] == [int(row["is_fraud"]) for row in rows]
    assert sum(e.label for e in events) == SPARKOV_FILES[name][1]
    first, row = events[0].event, rows[0]
    assert first["occurred_at"] == row["trans_date_trans_time"].replace(" ", "T") + "Z"
    assert first["event_id"] == f"sparkov-{row['trans_num']}"


def test_sparkov_merchant_names_lose_the_generator_prefix() -> None:
    events = list(read_sparkov(DATA / "sparkov" / "fraudTest_first5116rows.csv.gz", limit=500))
    names = [e.event["merchant"]["name"] for e in events]
    assert not any(name.startswith("fraud_") for name in names)
    assert names[0] == "Kirlin and Sons"


@pytest.mark.parametrize("name", sorted(SROIE_FILES))
def test_every_sroie_receipt_validates_as_document_v1(name: str) -> None:
    records = jsonl_records(DATA / "sroie" / name)
    events = list(read_sroie(DATA / "sroie" / name))
    assert len(events) == len(records) == SROIE_FILES[name]
    for item, record in zip(events, records, strict=True):
        model = DocumentV1.model_validate(json_round_trip(item.event))
        assert model.text == "\n".join(record["words"])
        assert model.metadata["date_raw"] == record["entities"]["date"]
        assert item.key == (model.entity_id or model.event_id)
        assert item.label is None


def test_every_shipped_receipt_date_is_read_without_the_fallback() -> None:
    events = list(open_source("sroie", DATA / "sroie"))
    assert [e.event for e in events if "date_unparsed" in e.event["metadata"]] == []
    years = {int(e.event["occurred_at"][:4]) for e in events}
    assert years <= {2015, 2016, 2017, 2018, 2019}


def test_unreadable_receipt_date_falls_back_and_is_flagged() -> None:
    record = {
        "key": "X1",
        "entities": {"company": "ÉCOLE Café", "date": "someday", "total": "1.00"},
        "words": ["ÉCOLE Café", "TOTAL 1.00"],
    }
    event = sroie_event(record).event
    assert event["occurred_at"] == f"{FALLBACK_DATE.isoformat()}T00:00:00Z"
    assert event["metadata"] == {"total": "1.00", "date_raw": "someday", "date_unparsed": "true"}
    assert event["entity_id"] == "ecole-cafe"
    DocumentV1.model_validate(event)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("09/01/2019", date(2019, 1, 9)),
        ("25-03-18", date(2018, 3, 25)),
        ("11.02.18", date(2018, 2, 11)),
        ("6/1/2018", date(2018, 1, 6)),
        ("2018-03-23", date(2018, 3, 23)),
        ("2018/02/22", date(2018, 2, 22)),
        ("20180428", date(2018, 4, 28)),
        ("25032018", date(2018, 3, 25)),
        ("15 MAR 2018", date(2018, 3, 15)),
        ("22 MAR 18", date(2018, 3, 22)),
        ("19-JAN-2018", date(2018, 1, 19)),
        ("04/JUN/2018", date(2018, 6, 4)),
        ("OCT 3, 2016", date(2016, 10, 3)),
        ("(06/12/2016)", date(2016, 12, 6)),
        ("12/13/2016", date(2016, 12, 13)),  # month first: 13 cannot be a month
        ("31/02/2018", None),
        ("not a date", None),
        ("", None),
    ],
)
def test_receipt_dates_are_read_day_first_in_many_spellings(raw: str, expected: date) -> None:
    assert parse_receipt_date(raw) == expected


def test_receipts_of_one_company_share_an_ascii_slug_entity_id() -> None:
    events = list(open_source("sroie", DATA / "sroie"))
    by_title = {e.event["title"]: e.event["entity_id"] for e in events}
    assert by_title["SEGI CASH & CARRY SDN. BHD."] == "segi-cash-carry-sdn-bhd"
    assert by_title["SEGI CASH & CARRY SDN.BHD"] == "segi-cash-carry-sdn-bhd"
    assert all(e.event["entity_id"].replace("-", "").isalnum() for e in events)


def test_every_sec_item_becomes_one_valid_document() -> None:
    filings = jsonl_records(SEC_8K)
    expected = sum(1 for f in filings for k, v in f.items() if k.startswith("item_") and v.strip())
    events = list(read_sec(SEC_8K))
    assert len(events) == expected == 1150
    assert len({e.event["event_id"] for e in events}) == len(events)
    for item in events:
        model = DocumentV1.model_validate(json_round_trip(item.event))
        assert model.source == "sec-8k"
        assert model.doc_type is not None and model.doc_type.startswith("item_")
        assert item.key == model.entity_id == f"CIK{model.metadata['cik']}"


def test_sec_documents_carry_filing_date_and_title() -> None:
    first = next(read_sec(SEC_8K)).event
    assert first["event_id"] == "sec-1000180_8K_2010_0000950123-10-078896-item_9.01"
    assert first["occurred_at"] == "2010-08-18T00:00:00Z"
    assert first["title"] == "SANDISK CORP 8-K item_9.01"


def test_open_source_reads_directories_up_to_the_limit() -> None:
    assert len(list(open_source("sparkov", DATA / "sparkov", limit=7))) == 7
    assert len(list(open_source("sec", [SEC_8K, SEC_8K], limit=1200))) == 1200


def test_open_source_refuses_unknown_kinds_and_missing_paths() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        open_source("kaggle", DATA)
    with pytest.raises(FileNotFoundError):
        open_source("sparkov", DATA / "missing.csv")


def test_sparkov_reader_refuses_a_file_of_another_source() -> None:
    with pytest.raises(ValueError, match="missing columns"):
        next(read_sparkov(DATA / "sroie" / "sroie_test_metadata.jsonl.gz"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48.15", "48.15"),
        ("1.1", "1.1"),
        ("250", "250"),
        ("0.123456", "0.123456"),
        ("604.9499999999999", "604.95"),
        ("168.85000000000002", "168.85"),
        ("45.000000000000006", "45.00"),
    ],
)
def test_amount_text_is_kept_unless_it_is_a_float_artefact(text: str, expected: str) -> None:
    assert exact_amount(text) == expected


@pytest.fixture(scope="module")
def fdh_split() -> tuple[list, list]:
    return fdh_protocol_split(fdh_dir())


@pytest.fixture(scope="module")
def fdh_raw() -> dict[str, list[dict[str, str]]]:
    folder = fdh_dir()
    weeks = ("2018-07-11_to_2018-07-17", "2018-07-18_to_2018-07-24", "2018-07-25_to_2018-07-31")
    return {week: csv_rows(folder / f"transactions_{week}.csv.gz") for week in weeks}


def test_fdh_training_week_matches_source_md(fdh_split: tuple[list, list]) -> None:
    train, _ = fdh_split
    assert len(train) == FDH_TRAIN_WEEK_ROWS
    assert sum(e.label for e in train) == FDH_TRAIN_WEEK_FRAUDS
    days = {e.event["occurred_at"][:10] for e in train}
    assert days == {f"2018-07-{day}" for day in range(11, 18)}


def test_fdh_test_week_drops_exactly_the_known_defrauded_customers(
    fdh_split: tuple[list, list], fdh_raw: dict[str, list[dict[str, str]]]
) -> None:
    fraud_days: dict[str, set[date]] = defaultdict(set)
    for rows in fdh_raw.values():
        for row in rows:
            if row["TX_FRAUD"] == "1":
                fraud_days[f"C{row['CUSTOMER_ID']}"].add(
                    date.fromisoformat(row["TX_DATETIME"][:10])
                )

    def known(customer: str, day: date) -> bool:  # frauds up to day - delay - 1 are known
        return any(fraud_day <= day - timedelta(days=8) for fraud_day in fraud_days[customer])

    test_week = fdh_raw["2018-07-25_to_2018-07-31"]
    assert len(test_week) == FDH_TEST_WEEK_ROWS
    expected = [
        f"fdh-{row['TRANSACTION_ID']}"
        for row in test_week
        if not known(f"C{row['CUSTOMER_ID']}", date.fromisoformat(row["TX_DATETIME"][:10]))
    ]
    _, test = fdh_split
    assert [e.event["event_id"] for e in test] == expected
    assert 0 < len(test) < FDH_TEST_WEEK_ROWS
    train_fraudsters = {e.key for e in fdh_split[0] if e.label == 1}
    assert not train_fraudsters & {e.key for e in test}


def test_fdh_events_validate_and_keep_the_amount_text(
    fdh_split: tuple[list, list], fdh_raw: dict[str, list[dict[str, str]]]
) -> None:
    train, _ = fdh_split
    rows = fdh_raw["2018-07-11_to_2018-07-17"]
    artefacts = 0
    for item, row in zip(train, rows, strict=True):
        raw, amount = row["TX_AMOUNT"], item.event["amount"]
        if len(raw.partition(".")[2]) > 6:  # float artefacts of the simulator's "amount * 5"
            artefacts += 1
            assert abs(Decimal(amount) - Decimal(raw)) < Decimal("1e-6")
        else:
            assert amount == raw
        assert item.label == int(row["TX_FRAUD"])
    assert artefacts > 0
    for item in train[::25]:
        model = TransactionV1.model_validate(json_round_trip(item.event))
        assert set(model.attributes) == set(FEATURES) and len(FEATURES) == 14
        assert model.currency == "EUR" and model.terminal_id.startswith("T")
