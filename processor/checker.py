"""Delivery checker: every produced event id against what the processor wrote.

Reads ``transactions.enriched`` and ``events.dlq`` (and ``alerts``) back with
:func:`processor.reader.read_topic`, which reads with ``isolation.level=read_committed``, so
records of aborted transactions are not counted. An event is *delivered* when its id appears in
the enriched topic or in a dead letter (whose id is taken from the original bytes it carries).

- a **loss** is a produced id that appears in neither;
- a **duplicate** is an id that appears more than once across both (``duplicate_records``
  counts the copies beyond the first);
- an **unexpected** id is one the outputs hold but nobody produced (should never happen);
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
    divergent_duplicates: int = 0  # ids whose enriched copies differ in score or flag
    flag_divergent_duplicates: int = 0  # of which the copies disagree on is_anomaly
    max_score_difference: float = 0.0  # largest score gap between copies of one event
    lost_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def holds(self, mode: str) -> bool:
        """Whether the delivery guarantee of ``mode`` holds for these outputs."""
        if self.losses or self.unexpected:
            return False
        if mode == "exactly-once":
            return self.duplicates == 0 and self.alert_duplicates == 0
        return True


def dead_letter_id(value: bytes | None) -> str:
    """The event id inside a dead letter's original bytes, else an id naming its source."""
    try:
        record = json.loads(value or b"")
    except ValueError:
        return "dead-letter:unreadable"
    source = record.get("source") or {}
    fallback = (
        f"dead-letter:{source.get('topic')}/{source.get('partition')}/{source.get('offset')}"
    )
    try:
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
    enriched: int = 0
    dead: int = 0
    divergent: set[str] = field(default_factory=set)
    flag_divergent: set[str] = field(default_factory=set)
    max_score_difference: float = 0.0


def read_outputs(bootstrap: str, topics: Topics, timeout: float = 120.0) -> Outputs:
    """Read the enriched, dead-letter and alert topics back, counting ids."""
    out = Outputs()
    verdicts: dict[str, tuple[float, bool]] = {}
    for record in read_topic(bootstrap, topics.transactions_enriched, timeout=timeout):
        enriched = json.loads(record.value)
        event_id = enriched["event_id"]
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
    for record in read_topic(bootstrap, topics.dead_letters, timeout=timeout):
        out.ids[dead_letter_id(record.value)] += 1
        out.dead += 1
    for record in read_topic(bootstrap, topics.alerts, timeout=timeout):
        out.alerts[json.loads(record.value)["event_id"]] += 1
    return out


def compare(produced: Iterable[str], out: Outputs) -> CheckResult:
    """Count losses and duplicates of the ``produced`` ids in what the outputs hold."""
    expected = set(produced)
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
        divergent_duplicates=len(out.divergent),
        flag_divergent_duplicates=len(out.flag_divergent),
        max_score_difference=out.max_score_difference,
        lost_ids=lost[:SAMPLE],
        duplicate_ids=repeated[:SAMPLE],
    )


def check(
    bootstrap: str,
    produced: Iterable[str],
    topics: Topics | None = None,
    timeout: float = 120.0,
) -> CheckResult:
    """Read the output topics at ``bootstrap`` and compare them with the ``produced`` ids."""
    return compare(produced, read_outputs(bootstrap, topics or Topics(), timeout))
