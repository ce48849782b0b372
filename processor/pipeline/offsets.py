"""The offset tracker: which input offsets may be committed.

Every consumed record is tracked from the moment it is read. It becomes *done* when the worker
has resolved it (decided how many outputs it has) and every one of those outputs has a
successful delivery report. The committable offset of a partition is one past the highest
offset below which every tracked record is done, so an offset is never committed before its
outputs, and those of every lower offset, are acknowledged.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

TopicPart = tuple[str, int]
_incarnations = itertools.count(1)


@dataclass
class _Partition:
    pending: dict[int, int] = field(default_factory=dict)
    unresolved: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)
    next_commit: int | None = None
    committed: int | None = None
    # a partition tracked again after a drop or a log reset is a new incarnation: delivery
    # reports of outputs from the earlier one must not settle the same offsets read again
    incarnation: int = field(default_factory=lambda: next(_incarnations))


class OffsetTracker:
    """Thread-safe: the consumer thread adds, the worker resolves, delivery reports ack."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[TopicPart, _Partition] = {}
        self._in_flight = 0

    def add(self, tp: TopicPart, offset: int) -> int:
        """Track a consumed record; it is unresolved until ``resolve`` is called.

        An offset not above the last one tracked means the partition's log was reset under the
        consumer (topic recreated, offset out of range, broker state lost): what was tracked
        for it is abandoned and tracking starts again. Returns how many records were abandoned.
        """
        with self._lock:
            part = self._parts.setdefault(tp, _Partition())
            abandoned = 0
            if part.order and offset <= part.order[-1]:
                abandoned = len(part.order)
                self._in_flight -= abandoned
                part = self._parts[tp] = _Partition()
            part.pending[offset] = 1
            part.unresolved.add(offset)
            part.order.append(offset)
            self._in_flight += 1
            return abandoned

    def incarnation(self, tp: TopicPart) -> int | None:
        with self._lock:
            part = self._parts.get(tp)
            return part.incarnation if part is not None else None

    def _current(self, tp: TopicPart, incarnation: int | None) -> _Partition | None:
        part = self._parts.get(tp)
        if part is None or (incarnation is not None and part.incarnation != incarnation):
            return None
        return part

    def resolve(
        self, tp: TopicPart, offset: int, outputs: int, incarnation: int | None = None
    ) -> bool:
        """Say how many outputs the record has (0 when skipped), once.

        False when the record is not tracked (its partition was revoked, or tracked again
        since ``incarnation``) or already resolved.
        """
        with self._lock:
            part = self._current(tp, incarnation)
            if part is None or offset not in part.unresolved:
                return False
            part.unresolved.discard(offset)
            self._settle(part, offset, outputs - 1)
            return True

    def ack(self, tp: TopicPart, offset: int, incarnation: int | None = None) -> None:
        """One output of the record was delivered."""
        with self._lock:
            part = self._current(tp, incarnation)
            if part is not None and offset in part.pending:
                self._settle(part, offset, -1)

    def _settle(self, part: _Partition, offset: int, delta: int) -> None:
        part.pending[offset] += delta
        if part.pending[offset] > 0:
            return
        while part.order and part.pending.get(part.order[0]) == 0:
            done = part.order.popleft()
            del part.pending[done]
            part.next_commit = done + 1
            self._in_flight -= 1

    def is_tracked(self, tp: TopicPart, offset: int, incarnation: int | None = None) -> bool:
        with self._lock:
            part = self._current(tp, incarnation)
            return part is not None and offset in part.pending

    def committable(self) -> dict[TopicPart, int]:
        """Offsets to commit (next offset to read) that moved since the last ``mark_committed``."""
        with self._lock:
            return {
                tp: p.next_commit
                for tp, p in self._parts.items()
                if p.next_commit is not None and p.next_commit != p.committed
            }

    def mark_committed(self, offsets: dict[TopicPart, int]) -> None:
        with self._lock:
            for tp, offset in offsets.items():
                if tp in self._parts:
                    self._parts[tp].committed = offset

    def in_flight(self, tps: set[TopicPart] | None = None) -> int:
        """Records read but not yet done, in all partitions or in ``tps``."""
        with self._lock:
            if tps is None:
                return self._in_flight
            return sum(len(self._parts[tp].order) for tp in tps if tp in self._parts)

    def drop(self, tps: list[TopicPart]) -> int:
        """Forget partitions (revoked or lost); returns how many unfinished records went."""
        with self._lock:
            dropped = 0
            for tp in tps:
                part = self._parts.pop(tp, None)
                if part is not None:
                    dropped += len(part.order)
            self._in_flight -= dropped
            return dropped
