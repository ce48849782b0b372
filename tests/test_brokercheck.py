"""The broker's transaction behaviour that the README's Known limitations describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processor.broker import free_port
from processor.brokercheck import TransactionChecks, check_transactions

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.broker


def test_embedded_broker_fails_the_transaction_checks_the_readme_names(broker: str) -> None:
    # Tansu 0.6 shows aborted records to read_committed readers and never aborts a transaction
    # whose producer vanished. When this fails, the embedded broker changed: re-run
    # `processor chaos` and update the README (Reliability, Known limitations).
    checks = check_transactions(broker)
    assert checks == TransactionChecks(aborted_hidden=False, abandoned_expire=False)
    assert not checks.ok and len(checks.problems()) == 2


def test_a_broker_that_passes_reports_no_problem() -> None:
    checks = TransactionChecks(aborted_hidden=True, abandoned_expire=True)
    assert checks.ok and checks.problems() == []
    assert checks.as_dict()["ok"] is True


def test_check_broker_command_reports_the_embedded_broker_and_exits_1(broker: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "processor", "check-broker", "--bootstrap", broker],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert "aborted transactions hidden from read_committed: NO" in result.stdout
    assert "transactions of a dead producer aborted on timeout: NO" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_broker_command_names_an_unreachable_broker_and_exits_2() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "processor", "check-broker", "--bootstrap", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
