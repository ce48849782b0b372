"""Delivery checker: every produced event id against what the processor wrote.

Reads ``transactions.enriched``, ``documents.enriched`` and ``events.dlq`` (and ``alerts``)
back with :func:`processor.reader.read_topic`, which reads with ``isolation.level=read_committed``,
so records of aborted transactions are not counted. An event is *delivered* when its id appears
in an enriched topic or in a dead letter (whose id is taken from the original bytes it carries,
or, for bytes without an event id, from the original key: ``key:<key>``).

- a **loss** is a produced id that appears in neither;
- a **duplicate** is an id that appears more than once across both (``duplicate_records``
  counts the copies beyond the first);
- an **unexpected** id is one the outputs hold but nobody produced (should never happen);
- a **wrong reason** is a dead letter whose reason is not the one its input must get (when the
  caller says which: a malformed record of a known kind);
- a **divergent** duplicate is an id whose enriched copies disagree on the anomaly flag or on
  the score by more than ``SCORE_TOLERANCE``: reprocessing after a crash should give the same
  answer (informational; the largest score difference is reported too).

At-least-once allows duplicates and no loss; exactly-once allows neither.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from processor.config import Topics
from processor.reader import read_topic

SAMPLE = 20
"""How many lost / duplicated ids a result lists by name."""
SCORE_TOLERANCE = 1e-4
"""Copies of one event may differ by float noise of batching; more than this is divergent."""


@dataclass(frozen=True)
class CheckResult:
    sent: int
    enriched_records: int
    dead_letter_records: int
    alert_records: int
    delivered: int  # distinct produced ids found in enriched or dead-letter outputs
    losses: int
    duplicates: int  # ids seen more than once
    duplicate_records: int  # copies beyond the first
    alert_duplicates: int  # alert event ids seen more than once (informational at-least-once)
    unexpected: int
    wrong_reasons: int = 0  # dead letters whose reason is not the expected one
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    divergent_duplicates: int = 0  # ids whose enriched copies differ in score or flag
    flag_divergent_duplicates: int = 0  # of which the copies disagree on is_anomaly
    max_score_difference: float = 0.0  # largest score gap between copies of one event
    lost_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    duplicate_spans: list[dict] = field(default_factory=list)  # see duplicate_spans()

    def as_dict(self) -> dict:
        return asdict(self)

    def holds(self, mode: str) -> bool:
        """Whether the delivery guarantee of ``mode`` holds for these outputs."""
        if self.losses or self.unexpected or self.wrong_reasons:
            return False
        if mode == "exactly-once":
            return self.duplicates == 0 and self.alert_duplicates == 0
        return True


def key_id(key: bytes) -> str:
    """The id a record without a readable event id is counted by: its key."""
    return "key:" + key.decode("utf-8", "backslashreplace")


def dead_letter_id(value: bytes | None) -> str:
    """The event id inside a dead letter's original bytes; else its original key (``key:…``);
    else an id naming its source."""
    try:
        record = json.loads(value or b"")
    except ValueError:
        return "dead-letter:unreadable"
    source = record.get("source") or {}
    fallback = (
        f"dead-letter:{source.get('topic')}/{source.get('partition')}/{source.get('offset')}"
    )
    try:
        if record.get("key_b64") and not record.get("key_truncated"):
            fallback = key_id(base64.b64decode(record["key_b64"], validate=True))
        original = json.loads(base64.b64decode(record.get("value_b64") or "", validate=True))
    except (ValueError, binascii.Error):
        return fallback
    event_id = original.get("event_id") if isinstance(original, dict) else None
    return event_id if isinstance(event_id, str) else fallback


@dataclass
class Outputs:
    """What the output topics hold, by event id."""

    ids: Counter = field(default_factory=Counter)  # enriched ∪ dead-letter
    alerts: Counter = field(default_factory=Counter)
    dead_reasons: dict[str, set[str]] = field(default_factory=dict)  # id -> reasons seen
    dead_by_reason: Counter = field(default_factory=Counter)  # dead-letter records by reason
    enriched: int = 0
    dead: int = 0
    divergent: set[str] = field(default_factory=set)
    flag_divergent: set[str] = field(default_factory=set)
    max_score_difference: float = 0.0
    sources: dict[str, set[tuple[str, int, int]]] = field(default_factory=dict)  # id -> inputs

    def note_source(self, event_id: str, record: dict) -> None:
        source = record.get("source") or {}
        if "topic" in source:
            where = (str(source["topic"]), int(source["partition"]), int(source["offset"]))
            self.sources.setdefault(event_id, set()).add(where)


def duplicate_spans(repeated: Iterable[str], out: Outputs) -> list[dict]:
    """Where the repeated ids came from: per input partition, the lowest and highest offset
    and how many. A kill inside a transaction repeats one batch: a block per partition."""
    offsets: dict[tuple[str, int], list[int]] = {}
    for event_id in repeated:
        for topic, partition, offset in out.sources.get(event_id, ()):
            offsets.setdefault((topic, partition), []).append(offset)
    return [
        {"topic": t, "partition": p, "first": min(o), "last": max(o), "ids": len(o)}
        for (t, p), o in sorted(offsets.items())
    ]


def read_outputs(bootstrap: str, topics: Topics, timeout: float = 120.0) -> Outputs:
    """Read the enriched, dead-letter and alert topics back, counting ids."""
    out = Outputs()
    verdicts: dict[str, tuple[float, bool]] = {}
    for record in read_topic(bootstrap, topics.transactions_enriched, timeout=timeout):
        enriched = json.loads(record.value)
        event_id = enriched["event_id"]
        out.note_source(event_id, enriched)
        out.ids[event_id] += 1
        out.enriched += 1
        anomaly = enriched.get("anomaly") or {}
        score, flag = float(anomaly.get("score", -1.0)), bool(anomaly.get("is_anomaly"))
        first_score, first_flag = verdicts.setdefault(event_id, (score, flag))
        gap = abs(score - first_score)
        out.max_score_difference = max(out.max_score_difference, gap)
        if gap > SCORE_TOLERANCE or flag != first_flag:
            out.divergent.add(event_id)
        if flag != first_flag:
            out.flag_divergent.add(event_id)
    for record in read_topic(bootstrap, topics.documents_enriched, timeout=timeout):
        document = json.loads(record.value)
        out.note_source(document["event_id"], document)
        out.ids[document["event_id"]] += 1
        out.enriched += 1
    for record in read_topic(bootstrap, topics.dead_letters, timeout=timeout):
        event_id = dead_letter_id(record.value)
        out.ids[event_id] += 1
        out.dead += 1
        letter = json.loads(record.value)
        out.note_source(event_id, letter)
        reason = str(letter.get("reason"))
        out.dead_reasons.setdefault(event_id, set()).add(reason)
        out.dead_by_reason[reason] += 1
    for record in read_topic(bootstrap, topics.alerts, timeout=timeout):
        out.alerts[json.loads(record.value)["event_id"]] += 1
    return out


def compare(
    produced: Iterable[str], out: Outputs, reasons: dict[str, str] | None = None
) -> CheckResult:
    """Count losses and duplicates of the ``produced`` ids in what the outputs hold;
    ``reasons`` maps ids that must be dead-lettered to the reason they must get."""
    expected = set(produced)
    reasons = reasons or {}
    wrong = sum(
        1
        for event_id, reason in reasons.items()
        if event_id in out.ids and out.dead_reasons.get(event_id) != {reason}
    )
    ids = out.ids
    lost = sorted(expected - set(ids))
    repeated = sorted(i for i, n in ids.items() if n > 1)
    return CheckResult(
        sent=len(expected),
        enriched_records=out.enriched,
        dead_letter_records=out.dead,
        alert_records=sum(out.alerts.values()),
        delivered=len(expected & set(ids)),
        losses=len(lost),
        duplicates=len(repeated),
        duplicate_records=sum(ids[i] - 1 for i in repeated),
        alert_duplicates=sum(1 for n in out.alerts.values() if n > 1),
        unexpected=len(set(ids) - expected),
        wrong_reasons=wrong,
        dead_letter_reasons=dict(out.dead_by_reason),
        divergent_duplicates=len(out.divergent),
        flag_divergent_duplicates=len(out.flag_divergent),
        max_score_difference=out.max_score_difference,
        lost_ids=lost[:SAMPLE],
        duplicate_ids=repeated[:SAMPLE],
        duplicate_spans=duplicate_spans(repeated, out),
    )


def check(
    bootstrap: str,
    produced: Iterable[str],
    topics: Topics | None = None,
    timeout: float = 120.0,
    reasons: dict[str, str] | None = None,
) -> CheckResult:
    """Read the output topics at ``bootstrap`` and compare them with the ``produced`` ids."""
    return compare(produced, read_outputs(bootstrap, topics or Topics(), timeout), reasons)
