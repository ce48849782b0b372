"""The default transactional.id: stable across restarts, unique among live processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from processor.pipeline import txn_id


def test_side_by_side_claims_get_different_slots_and_a_released_one_is_reused(
    tmp_path: Path,
) -> None:
    first = txn_id.claim("g", host="h", directory=tmp_path)
    second = txn_id.claim("g", host="h", directory=tmp_path)
    assert (first.transactional_id, second.transactional_id) == ("g-h-0", "g-h-1")
    first.release()
    again = txn_id.claim("g", host="h", directory=tmp_path)
    assert again.transactional_id == "g-h-0"
    other_group = txn_id.claim("other group/x", host="h", directory=tmp_path)
    assert other_group.transactional_id == "other group/x-h-0"


def test_a_slot_held_by_a_process_killed_with_sigkill_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from processor.pipeline import txn_id; "
            f"c = txn_id.claim('g', host='h', directory=Path({str(tmp_path)!r})); "
            "print(c.transactional_id, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "g-h-0"
        assert txn_id.claim("g", host="h", directory=tmp_path).transactional_id == "g-h-1"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 5
        while True:  # the kernel drops the lock with the process
            claim = txn_id.claim("g", host="h", directory=tmp_path)
            if claim.transactional_id == "g-h-0" or time.monotonic() > deadline:
                break
            claim.release()
        assert claim.transactional_id == "g-h-0"
    finally:
        holder.kill()
