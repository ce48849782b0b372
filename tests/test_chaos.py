"""The crash harness, short: SIGKILL `processor run` twice mid-stream, with receipts, malformed
records and tombstones mixed in; no record may be lost or dead-lettered for the wrong reason."""

from __future__ import annotations

import argparse
import base64
import json
from collections import Counter
from pathlib import Path

import pytest

from processor import chaos, checker

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_at_least_once_survives_sigkill_without_losing_an_event(
    model_dir: Path, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    chaos.configure_parser(parser)
    out = tmp_path / "chaos.json"
    args = parser.parse_args(
        [
            "--modes=at-least-once",
            "--events=600",
            "--documents-every=40",
            "--malformed-every=25",
            "--tombstones-every=60",
            "--kills=2",
            "--startup-kills=1",
            "--drain-kills=1",
            "--startup-window=6",
            "--seed=1",
            "--rate=20",  # the feed lasts past the first kill: it lands mid-stream
            "--preload=0.2",
            "--min-uptime=1",
            "--max-uptime=4",
            f"--model-dir={model_dir}",
            f"--workdir={tmp_path}",
            f"--json={out}",
            "--stall-timeout=60",
        ]
    )
    code = chaos.main(args)
    report = json.loads(out.read_text())
    (run,) = report["modes"]
    assert run["mode"] == "at-least-once"
    assert run["events_sent"] == 600
    assert run["records_by_kind"] == {
        "transactions": 560,
        "documents": 8,  # multiples of 40, less those of 60 (tombstones) or 25 (malformed)
        "malformed": 22,  # multiples of 25, less those of 60
        "tombstones": 10,
    }
    assert run["check"]["wrong_reasons"] == 0
    assert sum(run["check"]["dead_letter_reasons"].values()) >= 22
    assert set(run["check"]["dead_letter_reasons"]) == set(chaos.MALFORMED_KINDS)
    assert run["losses"] == 0, run["check"]["lost_ids"]
    assert run["all_committed"] and not run["problems"], run["problems"]
    ends = Counter(i["end"] for i in run["incarnations"])
    assert ends["SIGKILL"] == 2 and ends["SIGKILL in start-up"] == 1
    # a drain may finish before its kill lands: then it is a clean stop, not a crash
    assert ends["SIGKILL in the drain"] + ends["SIGTERM, exit 0 before the kill"] == 1
    assert run["crashes"] == 3 + ends["SIGKILL in the drain"]
    assert run["incarnations"][-1]["end"] == "SIGTERM, exit 0"
    assert sum(ends.values()) == 5
    assert code == 0


def test_the_checker_counts_losses_duplicates_and_strangers() -> None:
    out = checker.Outputs(Counter({"a": 1, "b": 3, "x": 1}), Counter({"b": 2}), enriched=5)
    result = checker.compare(["a", "b", "c"], out)
    assert (result.sent, result.delivered, result.losses) == (3, 2, 1)
    assert (result.duplicates, result.duplicate_records) == (1, 2)
    assert (result.unexpected, result.alert_duplicates) == (1, 1)
    assert result.lost_ids == ["c"] and result.duplicate_ids == ["b"]
    assert not result.holds("at-least-once")  # "x" was never produced
    clean = checker.compare(["a", "b"], checker.Outputs(Counter({"a": 1, "b": 2})))
    assert clean.holds("at-least-once") and not clean.holds("exactly-once")


def test_a_dead_letter_counts_for_the_event_inside_it_else_its_key() -> None:
    original = base64.b64encode(b'{"event_id": "e-1", "amount": "x"}').decode()
    record = {"source": {"topic": "t", "partition": 2, "offset": 7}, "value_b64": original}
    assert checker.dead_letter_id(json.dumps(record).encode()) == "e-1"
    record["value_b64"] = base64.b64encode(b"not json").decode()
    assert checker.dead_letter_id(json.dumps(record).encode()) == "dead-letter:t/2/7"
    record["key_b64"] = base64.b64encode(b"bad-3").decode()
    assert checker.dead_letter_id(json.dumps(record).encode()) == "key:bad-3"
    record["key_truncated"] = True  # a prefix is no id
    assert checker.dead_letter_id(json.dumps(record).encode()) == "dead-letter:t/2/7"


def test_the_checker_counts_dead_letters_with_the_wrong_reason() -> None:
    out = checker.Outputs(Counter({"key:a": 1, "key:b": 1, "c": 1}))
    out.dead_reasons = {"key:a": {"not_json"}, "key:b": {"schema_invalid"}}
    result = checker.compare(
        ["key:a", "key:b", "c"], out, {"key:a": "not_json", "key:b": "not_utf8"}
    )
    assert result.wrong_reasons == 1 and result.losses == 0
    assert not result.holds("at-least-once")


def test_mixed_records_carry_the_kinds_and_ids_the_checker_expects() -> None:
    from processor.pipeline.decode import decode

    records = chaos.build_records(1000, documents_every=10, malformed_every=7, tombstones_every=50)
    ids = [r.expected_id for r in records if r.expected_id is not None]
    assert len(ids) == len(set(ids)) == 1000 - 20
    for record in records:
        expected = "document" if record.role == "documents" else "transaction"
        decoded = decode(record.value, expected, 1_000_000)
        if record.value is None:
            assert decoded.skipped
        elif record.reason is not None:
            assert decoded.reason is not None and decoded.reason.value == record.reason
        else:
            assert decoded.reason is None and decoded.event.event_id == record.expected_id
    kinds = Counter(r.reason for r in records if r.reason)
    assert set(kinds) == set(chaos.MALFORMED_KINDS)


def test_the_default_mix_has_every_malformed_kind_alike() -> None:
    records = chaos.build_records(20_000, 100, 250, 500)
    assert Counter(chaos._kind(r) for r in records) == {
        "transactions": 19_760,
        "documents": 160,
        "malformed": 40,
        "tombstones": 40,
    }
    assert Counter(r.reason for r in records if r.reason) == dict.fromkeys(
        chaos.MALFORMED_KINDS, 10
    )


def test_reused_rows_get_a_round_suffix_and_every_id_is_unique() -> None:
    events = chaos.build_events(12_500)
    ids = [e.event["event_id"] for e in events]
    assert len(set(ids)) == len(ids) == 12_500
    assert sum(i.endswith("-r1") for i in ids) > 1000  # the overlap and the second pass
    assert not ids[0].endswith("-r1")


def test_repeated_ids_are_placed_by_input_partition_and_follow_the_kill_before_them() -> None:
    out = checker.Outputs()
    for n, offset in enumerate([10, 11, 13, 40]):
        record = {"source": {"topic": "tx", "partition": 1, "offset": offset}}
        out.note_source(f"id-{n}", record)
        out.note_source(f"id-{n}", record)  # the copy: same input
    out.note_source("id-9", {"source": {"topic": "tx", "partition": 0, "offset": 5}})
    spans = checker.duplicate_spans(["id-0", "id-1", "id-2", "id-9"], out)
    assert spans == [
        {"topic": "tx", "partition": 0, "first": 5, "last": 5, "ids": 1},
        {"topic": "tx", "partition": 1, "first": 10, "last": 13, "ids": 3},
    ]
    runs = [
        {"number": 1, "end": "SIGKILL", "committed_by_partition": {"tx[1]": 4}},
        {"number": 2, "end": "SIGKILL in start-up", "committed_by_partition": {"tx[1]": 10}},
        {"number": 3, "end": "SIGKILL", "committed_by_partition": {"tx[1]": 30}},
        {"number": 4, "end": "SIGTERM, exit 0", "committed_by_partition": {"tx[1]": 10}},
    ]
    text = chaos._describe_span(spans[1], runs)
    assert text.startswith("tx[1] offsets 10-13 (3 ids)")
    assert "after run #2 (SIGKILL in start-up) left that partition committed at 10" in text
