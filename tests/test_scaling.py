"""Scaling the Kafka way: one processor, then three in the same group, then one again, while
events keep arriving. Every event must come out, and a graceful scale-out and scale-in must not
process any event twice (the revoked partitions are drained and committed before they move)."""

from __future__ import annotations

import json
import signal
import time
import uuid
from functools import partial
from itertools import islice
from pathlib import Path

import pytest

from processor.broker import ensure_topics
from processor.chaos import (
    Feeder,
    GroupOffsets,
    Incarnation,
    processor_env,
    transaction_record,
)
from processor.checker import compare, read_outputs
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import fresh_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENTS = 3000
RATE = 50.0  # events/s: the feed lasts about 60 s, across the whole 1 -> 3 -> 1 sequence
PARTITIONS = 6


def wait_for(condition, timeout: float, what: str, procs: list[Incarnation]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.alive(), f"processor {proc.number} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def fresh_group(broker: str, model_dir: Path, mode: str, prefix: str):
    """New topics (6 input partitions), a new group and the processors' environment."""
    topics = fresh_topics()
    ensure_topics(broker, topics.inputs(), partitions=PARTITIONS)
    ensure_topics(broker, topics.outputs(), partitions=3)
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    env = processor_env(broker, model_dir, group, mode)
    env.update({f"PROCESSOR_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()})
    env.update({"PROCESSOR_BATCH_SIZE": "16", "OMP_NUM_THREADS": "1"})
    return topics, group, env


def everything_committed(feeder: Feeder, offsets: GroupOffsets) -> bool:
    """The group's offset of every partition has reached what the feeder produced there."""
    _, ends = feeder.snapshot()
    committed = offsets.committed()
    return all(committed.get(p, 0) >= end for p, end in ends.items())


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_one_to_three_to_one_loses_and_repeats_nothing(
    broker: str, model_dir: Path, tmp_path: Path, mode: str
) -> None:
    topics, group, env = fresh_group(broker, model_dir, mode, "test-scale")

    def replica(number: int) -> Incarnation:
        stats = tmp_path / f"stats-{number}.json"
        return Incarnation(
            number, tmp_path / f"p{number}.log", {**env, "PROCESSOR_STATS_FILE": str(stats)}
        ).start()

    events = list(islice(open_source("sparkov", SPARKOV_STREAM), EVENTS))
    feeder = Feeder(broker, {"transactions": topics.transactions})
    offsets = GroupOffsets(broker, group, [topics.transactions], PARTITIONS)
    first = replica(1)
    extra: list[Incarnation] = []
    try:
        wait_for(first.ready, 90, "the first processor's partitions", [first])
        feeder.start([transaction_record(e) for e in events], rate=RATE)

        extra = [replica(2), replica(3)]  # scale out: same group, the partitions spread
        wait_for(lambda: all(p.ready() for p in extra), 120, "partitions for 2 and 3", extra)
        time.sleep(4)  # all three work side by side for a while
        assert not feeder.done.is_set(), "the feed ended before the scale-in: nothing to test"

        for proc in extra:  # scale in: SIGTERM drains, commits and leaves the group
            proc.proc.send_signal(signal.SIGTERM)
        for proc in extra:
            assert proc.wait_exit(90) == 0, f"processor {proc.number}:\n{proc.tail()}"

        feeder.done.wait(120)
        assert feeder.error is None and not feeder.failed, feeder.failed[:5]
        all_committed = partial(everything_committed, feeder, offsets)
        wait_for(all_committed, 180, "the last replica to commit every offset", [first])
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait_exit(90) == 0, first.tail()
    finally:
        offsets.close()
        for proc in [first, *extra]:
            if proc.alive():
                proc.kill()

    stats = [json.loads((tmp_path / f"stats-{n}.json").read_text()) for n in (1, 2, 3)]
    assert all(s["enriched"] > 0 for s in stats), [s["enriched"] for s in stats]
    assert stats[0]["revocations"] >= 1  # the first replica gave partitions away
    result = compare([e.event["event_id"] for e in events], read_outputs(broker, topics))
    assert result.losses == 0, result.lost_ids
    assert result.unexpected == 0
    assert result.duplicates == 0 and result.alert_duplicates == 0, result.duplicate_ids
    assert sum(s["enriched"] for s in stats) == EVENTS


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_a_replica_killed_in_the_middle_of_a_rebalance_loses_nothing(
    broker: str, model_dir: Path, tmp_path: Path, mode: str
) -> None:
    """Two replicas join a working one; the first to get partitions is SIGKILLed the moment it
    has them (the cooperative rebalance is still moving partitions) and replaced, as an
    orchestrator would. Nothing may be lost. Exactly-once repeats nothing unless the kill
    landed inside a transaction, and then on Tansu at most that one batch (see
    tests/test_exactly_once.py); the replacement takes the killed replica's id slot."""
    topics, group, env = fresh_group(broker, model_dir, mode, "test-rebalance-kill")

    def replica(number: int) -> Incarnation:
        return Incarnation(number, tmp_path / f"p{number}.log", env).start()

    events = list(islice(open_source("sparkov", SPARKOV_STREAM), EVENTS))
    feeder = Feeder(broker, {"transactions": topics.transactions})
    offsets = GroupOffsets(broker, group, [topics.transactions], PARTITIONS)
    procs = [replica(1)]
    try:
        wait_for(procs[0].ready, 90, "the first processor's partitions", procs)
        feeder.start([transaction_record(e) for e in events], rate=RATE)
        time.sleep(3)
        joining = [replica(2), replica(3)]
        procs += joining
        deadline = time.monotonic() + 120
        while not any(p.ready() for p in joining):  # the first assignment of a newcomer
            assert time.monotonic() < deadline, "no newcomer got partitions"
            time.sleep(0.05)
        victim = next(p for p in joining if p.ready())
        assert not feeder.done.is_set(), "the feed ended before the kill: nothing to test"
        victim.kill()
        procs.remove(victim)
        procs.append(replica(4))  # the replacement
        wait_for(lambda: all(p.ready() for p in procs), 120, "the replicas' partitions", procs)

        feeder.done.wait(120)
        assert feeder.error is None and not feeder.failed, feeder.failed[:5]
        all_committed = partial(everything_committed, feeder, offsets)
        wait_for(all_committed, 180, "every offset to be committed", procs)
        for proc in procs:
            proc.proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait_exit(90) == 0, f"processor {proc.number}:\n{proc.tail()}"
    finally:
        offsets.close()
        for proc in procs:
            if proc.alive():
                proc.kill()

    result = compare([e.event["event_id"] for e in events], read_outputs(broker, topics))
    assert result.losses == 0, result.lost_ids
    assert result.unexpected == 0
    if mode == "exactly-once":
        assert result.duplicates <= 16, result.duplicate_ids  # one batch of the victim at most
        logs = [(tmp_path / f"p{n}.log").read_text() for n in (victim.number, 4)]
        slot = [log.split("transactional.id ")[1].split()[0] for log in logs]
        assert slot[0] == slot[1], slot  # the replacement took over the victim's id
