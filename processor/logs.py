"""Logging: one root logger for the package, key=value fields a person can grep."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("PROCESSOR_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("processor")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class ClientLog:
    """librdkafka's log lines (a client's ``logger``), to the ``processor.kafka`` logger, with
    repeats counted instead of logged. A FATAL line also records the
    cause: the fatal error itself reaches whichever call serves it first, and confluent-kafka
    2.16 can turn it into a SystemError without its text there (seen in a producer's flush)."""

    REPEAT_S = 30.0  # the same line again within this time is counted, not logged

    def __init__(self, on_fatal=None) -> None:
        self._log = logging.getLogger("processor.kafka")
        self._on_fatal = on_fatal
        self._last: dict[tuple, list] = {}  # (facility, client, text) -> [logged at, repeats]
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args) -> None:
        if len(args) == 3 and args[0] == "FATAL" and self._on_fatal:  # (facility, name, text)
            self._on_fatal(str(args[2]).split("]: ", 1)[-1])
        if len(args) == 3:  # an unreachable broker repeats its connect failure many times a second
            key = (args[0], args[1], _without_timing(str(args[2])))
            now = time.monotonic()
            with self._lock:
                seen = self._last.get(key)
                if seen is not None and now - seen[0] < self.REPEAT_S:
                    seen[1] += 1
                    return
                repeats = seen[1] if seen is not None else 0
                self._last[key] = [now, 0]
                if len(self._last) > 1000:
                    self._last.clear()
            if repeats:
                fmt += " (%d more times in the last %.0f s)"
                args = (*args, repeats, self.REPEAT_S)
        self._log.log(level, fmt, *args)


def _without_timing(text: str) -> str:
    """The text of a librdkafka line without the parts that change on each repeat."""
    return re.sub(r"\(after \d+ms[^)]*\)", "", text)
