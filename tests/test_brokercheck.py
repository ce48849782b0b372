"""The broker's transaction behaviour that the README's Known limitations describe."""

from __future__ import annotations

import pytest

from processor.brokercheck import TransactionChecks, check_transactions

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
