"""Data-source adapters: turn public data files into schema-valid events for replay to Kafka.

Each reader yields :class:`SourceEvent` records (a JSON-ready event dict, its Kafka key and the
ground-truth label where the data has one). ``open_source`` picks a reader by name and accepts
files or directories.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice

from processor.sources.base import PathLike, SourceEvent, expand_paths
from processor.sources.fdh import fdh_protocol_split, read_fdh
from processor.sources.sec import read_sec
from processor.sources.sparkov import read_sparkov
from processor.sources.sroie import read_sroie

logger = logging.getLogger(__name__)

Reader = Callable[..., Iterator[SourceEvent]]

SOURCES: dict[str, Reader] = {
    "sparkov": read_sparkov,
    "fdh": read_fdh,
    "sroie": read_sroie,
    "sec": read_sec,
}
"""Reader per source name; each takes a path (fdh: paths) and ``limit``."""

EVENT_TYPES: dict[str, str] = {
    "sparkov": "transaction",
    "fdh": "transaction",
    "sroie": "document",
    "sec": "document",
}
"""Which event type each source produces."""

FILE_PATTERNS: dict[str, tuple[str, ...]] = {
    "sparkov": ("*.csv.gz", "*.csv"),
    "fdh": ("*.csv.gz", "*.csv"),
    "sroie": ("*.jsonl.gz", "*.jsonl"),
    "sec": ("*.jsonl.gz", "*.jsonl"),
}
"""Files a directory argument expands to, per source."""


def open_source(
    kind: str, paths: PathLike | Iterable[PathLike], limit: int | None = None
) -> Iterator[SourceEvent]:
    """Events of source ``kind`` from files or directories (in the order given), at most ``limit``.

    Raises ``ValueError`` for an unknown kind and ``FileNotFoundError`` for a missing path before
    any event is read.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}; choose one of {', '.join(SOURCES)}")
    files = expand_paths(paths, FILE_PATTERNS[kind])
    logger.debug("source %s: reading %s", kind, ", ".join(map(str, files)))
    if kind == "fdh":
        return read_fdh(files, limit=limit)
    reader = SOURCES[kind]
    return islice(chain.from_iterable(reader(path) for path in files), limit)


__all__ = [
    "EVENT_TYPES",
    "SOURCES",
    "SourceEvent",
    "fdh_protocol_split",
    "open_source",
    "read_fdh",
    "read_sec",
    "read_sparkov",
    "read_sroie",
]
