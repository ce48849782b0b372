"""OffsetTracker: an input offset is committable only once it and every lower offset are done."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.pipeline.offsets import OffsetTracker, TopicPart

TP: TopicPart = ("transactions.raw", 0)
OTHER: TopicPart = ("transactions.raw", 1)


def _tracker_with(tp: TopicPart, offsets: list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add(tp, offset)
    return tracker


def test_nothing_committable_before_any_record_is_done() -> None:
    tracker = _tracker_with(TP, [0, 1, 2])

    assert tracker.committable() == {}
    assert tracker.in_flight() == 3


def test_offset_not_committed_before_all_outputs_acknowledged() -> None:
    tracker = _tracker_with(TP, [10])

    assert tracker.resolve(TP, 10, 1) is True
    assert tracker.committable() == {}
    assert tracker.is_tracked(TP, 10)

    tracker.ack(TP, 10)

    assert tracker.committable() == {TP: 11}
    assert not tracker.is_tracked(TP, 10)
    assert tracker.in_flight() == 0


def test_record_with_two_outputs_needs_both_acknowledgements() -> None:
    tracker = _tracker_with(TP, [0])
    tracker.resolve(TP, 0, 2)

    tracker.ack(TP, 0)
    assert tracker.committable() == {}
    assert tracker.in_flight() == 1

    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 1}
    assert tracker.in_flight() == 0


def test_out_of_order_ack_does_not_move_commit_past_unfinished_lower_offset() -> None:
    tracker = _tracker_with(TP, [3, 4, 5])
    for offset in (3, 4, 5):
        tracker.resolve(TP, offset, 1)
    tracker.ack(TP, 3)
    assert tracker.committable() == {TP: 4}

    tracker.ack(TP, 5)  # 5 is done, but 4 is not: nothing past 4 may be committed
    assert tracker.committable() == {TP: 4}
    assert tracker.in_flight() == 2
    assert tracker.is_tracked(TP, 5)

    tracker.ack(TP, 4)
    assert tracker.committable() == {TP: 6}
    assert tracker.in_flight() == 0


def test_unresolved_lower_offset_blocks_finished_higher_offset() -> None:
    tracker = _tracker_with(TP, [0, 1])
    tracker.resolve(TP, 1, 0)

    assert tracker.committable() == {}

    tracker.resolve(TP, 0, 0)
    assert tracker.committable() == {TP: 2}


def test_skipped_record_is_done_at_once() -> None:
    tracker = _tracker_with(TP, [7])

    assert tracker.resolve(TP, 7, 0) is True

    assert tracker.committable() == {TP: 8}
    assert tracker.in_flight() == 0
    assert not tracker.is_tracked(TP, 7)


def test_ack_before_resolve_does_not_finish_a_record_with_more_outputs() -> None:
    """Outputs are produced after ``resolve``; an ack must never be counted as the resolve."""
    tracker = _tracker_with(TP, [0])
    tracker.resolve(TP, 0, 3)
    tracker.ack(TP, 0)
    tracker.ack(TP, 0)

    assert tracker.committable() == {}

    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 1}


def test_committable_returns_only_partitions_that_moved_since_mark_committed() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 0)
    tracker.add(OTHER, 0)
    tracker.add(OTHER, 1)
    tracker.resolve(TP, 0, 0)
    tracker.resolve(OTHER, 0, 0)
    first = tracker.committable()
    assert first == {TP: 1, OTHER: 1}

    tracker.mark_committed(first)
    assert tracker.committable() == {}

    tracker.resolve(OTHER, 1, 0)
    assert tracker.committable() == {OTHER: 2}


def test_progress_after_stale_mark_committed_is_still_reported() -> None:
    tracker = _tracker_with(TP, [0, 1])
    tracker.resolve(TP, 0, 0)
    snapshot = tracker.committable()
    tracker.resolve(TP, 1, 0)  # moves on while the commit of the snapshot is in progress

    tracker.mark_committed(snapshot)

    assert tracker.committable() == {TP: 2}


def test_mark_committed_of_unknown_partition_is_ignored() -> None:
    tracker = _tracker_with(TP, [0])
    tracker.resolve(TP, 0, 0)

    tracker.mark_committed({OTHER: 5})

    assert tracker.committable() == {TP: 1}


def test_drop_removes_in_flight_counts_of_dropped_partitions_only() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(TP, offset)
    tracker.add(OTHER, 0)
    tracker.resolve(TP, 0, 0)

    assert tracker.drop([TP, ("never", 9)]) == 2

    assert tracker.in_flight() == 1
    assert tracker.in_flight({TP}) == 0
    assert tracker.in_flight({OTHER}) == 1
    assert tracker.committable() == {}


def test_resolve_and_ack_on_dropped_partition_are_ignored() -> None:
    tracker = _tracker_with(TP, [0, 1])
    tracker.resolve(TP, 0, 1)
    tracker.drop([TP])

    assert tracker.resolve(TP, 1, 0) is False
    tracker.ack(TP, 0)

    assert tracker.committable() == {}
    assert tracker.in_flight() == 0
    assert not tracker.is_tracked(TP, 0)


def test_resolve_of_untracked_offset_returns_false() -> None:
    tracker = _tracker_with(TP, [0])

    assert tracker.resolve(TP, 1, 0) is False
    assert tracker.resolve(OTHER, 0, 0) is False
    assert tracker.in_flight() == 1


def test_partition_readded_after_drop_starts_afresh() -> None:
    tracker = _tracker_with(TP, [100, 101])
    tracker.drop([TP])

    tracker.add(TP, 50)  # a lower offset is fine: the partition is new to the tracker
    tracker.resolve(TP, 50, 0)

    assert tracker.committable() == {TP: 51}


def test_in_flight_counts_per_partition_set() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(TP, offset)
    for offset in (5, 6):
        tracker.add(OTHER, offset)
    tracker.resolve(OTHER, 5, 0)

    assert tracker.in_flight() == 4
    assert tracker.in_flight({TP}) == 3
    assert tracker.in_flight({OTHER}) == 1
    assert tracker.in_flight({TP, OTHER}) == 4
    assert tracker.in_flight({("absent", 0)}) == 0
    assert tracker.in_flight(set()) == 0


@pytest.mark.parametrize("offset", [4, 3])
def test_an_offset_going_back_restarts_tracking_of_that_partition(offset: int) -> None:
    tracker = _tracker_with(TP, [4])

    assert tracker.add(TP, offset) == 1  # the log was reset under us: 4 is abandoned

    assert tracker.in_flight() == 1
    assert tracker.resolve(TP, offset, 0)
    assert tracker.committable() == {TP: offset + 1}


def test_offsets_may_have_gaps() -> None:
    """Compacted topics and transaction markers leave holes; the commit jumps over them."""
    tracker = _tracker_with(TP, [0, 5, 9])
    for offset in (0, 5, 9):
        tracker.resolve(TP, offset, 0)

    assert tracker.committable() == {TP: 10}


# -- property: random interleavings -----------------------------------------------------------

PARTS: list[TopicPart] = [("t", 0), ("t", 1), ("u", 0)]


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[dict[TopicPart, list[tuple[int, int]]], list]:
    """Records per partition (offset, outputs), and a random order of resolve/ack steps.

    Each record's resolve comes before its own acks (the worker resolves, then produces),
    but steps of different records and partitions interleave freely.
    """
    records: dict[TopicPart, list[tuple[int, int]]] = {}
    for tp in PARTS:
        gaps = draw(st.lists(st.integers(1, 3), min_size=0, max_size=8))
        outputs = draw(st.lists(st.integers(0, 3), min_size=len(gaps), max_size=len(gaps)))
        offset = draw(st.integers(0, 5)) - 1
        recs = []
        for gap, n in zip(gaps, outputs, strict=True):
            offset += gap
            recs.append((offset, n))
        records[tp] = recs
    queues = [
        [("resolve", tp, off, n)] + [("ack", tp, off, 0)] * n
        for tp, recs in records.items()
        for off, n in recs
    ]
    steps = []
    while any(queues):
        live = [q for q in queues if q]
        chosen = draw(st.sampled_from(live))
        steps.append(chosen.pop(0))
        if draw(st.integers(0, 4)) == 0:
            steps.append(("commit", None, 0, 0))
    return records, steps


@settings(max_examples=200, deadline=None)
@given(_schedules())
def test_committable_never_passes_an_unfinished_offset(
    schedule: tuple[dict[TopicPart, list[tuple[int, int]]], list],
) -> None:
    records, steps = schedule
    tracker = OffsetTracker()
    for tp, recs in records.items():
        for offset, _ in recs:
            tracker.add(tp, offset)
    resolved: set[tuple[TopicPart, int]] = set()
    acks_left = {(tp, off): n for tp, recs in records.items() for off, n in recs}
    committed: dict[TopicPart, int] = {}

    for action, tp, offset, outputs in steps:
        if action == "resolve":
            assert tracker.resolve(tp, offset, outputs) is True
            resolved.add((tp, offset))
        elif action == "ack":
            tracker.ack(tp, offset)
            acks_left[(tp, offset)] -= 1
        else:
            moved = tracker.committable()
            for part, position in moved.items():
                assert position != committed.get(part)
                assert position > committed.get(part, -1)
            tracker.mark_committed(moved)
            committed.update(moved)

        for part, position in {**committed, **tracker.committable()}.items():
            for off, _ in records[part]:
                if off < position:
                    assert (part, off) in resolved and acks_left[(part, off)] == 0, (
                        f"{part} committable at {position} but offset {off} is not done"
                    )
        unfinished = sum(1 for key, left in acks_left.items() if key not in resolved or left > 0)
        assert tracker.in_flight() >= unfinished

    final = {**committed, **tracker.committable()}
    expected = {tp: recs[-1][0] + 1 for tp, recs in records.items() if recs}
    assert final == expected
    assert tracker.in_flight() == 0
    for tp in PARTS:
        assert tracker.in_flight({tp}) == 0


def test_a_record_is_resolved_only_once() -> None:
    tracker = OffsetTracker()
    tp = ("t", 2)
    tracker.add(tp, 179)
    assert tracker.resolve(tp, 179, 2)
    assert not tracker.resolve(tp, 179, 1)  # a second decision is refused, not added
    tracker.ack(tp, 179)
    tracker.ack(tp, 179)
    assert tracker.in_flight() == 0
    assert tracker.committable() == {tp: 180}


def test_a_late_delivery_report_from_before_a_drop_does_not_settle_the_record_read_again() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 5)
    before = tracker.incarnation(TP)
    tracker.resolve(TP, 5, 1, before)  # its output is in flight when the partition goes
    tracker.drop([TP])

    tracker.add(TP, 5)  # the same offset, read again after the partition came back
    again = tracker.incarnation(TP)
    assert again != before
    tracker.ack(TP, 5, before)  # the old output's report arrives late
    assert tracker.committable() == {}
    assert tracker.resolve(TP, 5, 1, before) is False
    assert tracker.is_tracked(TP, 5, before) is False

    assert tracker.resolve(TP, 5, 1, again)
    tracker.ack(TP, 5, again)
    assert tracker.committable() == {TP: 6}
