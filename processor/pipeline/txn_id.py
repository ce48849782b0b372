"""The default ``transactional.id`` of an exactly-once processor.

A restarted replica should come back with the ``transactional.id`` of the process it replaces:
its ``init_transactions`` then fences that process and ends the transaction it left open (Apache
Kafka aborts it at once instead of after ``transaction.timeout.ms``, during which the group's
offsets for those partitions cannot be read). Replicas running side by side need different ids,
or they fence each other. The default is therefore ``<group>-<host>-<slot>``, with the lowest
slot that no live process on this host holds: each slot is an exclusive ``flock`` on a file in
the temporary directory, which the kernel releases when its process dies, SIGKILL included.
In a container the host name is the container's, so each container starts at slot 0.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path

MAX_SLOTS = 1024


class SlotClaim:
    """A held slot; the lock lasts as long as this object (or the process)."""

    def __init__(self, transactional_id: str, handle) -> None:
        self.transactional_id = transactional_id
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def claim(group: str, host: str | None = None, directory: Path | None = None) -> SlotClaim:
    """Take the lowest free slot of ``group`` on this host."""
    host = host or socket.gethostname()
    directory = directory or Path(tempfile.gettempdir())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}-{host}")[:200]
    for slot in range(MAX_SLOTS):
        path = directory / f"finstream-txn-{safe}-{slot}.lock"
        handle = open(path, "a+")  # noqa: SIM115 -- held open for the process's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return SlotClaim(f"{group}-{host}-{slot}", handle)
    raise RuntimeError(f"no free transactional.id slot among {MAX_SLOTS} for group {group!r}")
