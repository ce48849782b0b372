"""Shared fixtures: one real embedded broker and one small trained model per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from processor.broker import EmbeddedBroker, free_port  # noqa: E402
from processor.device import DeviceChoice, choose_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SPARKOV_HISTORY = DATA / "sparkov" / "fraudTrain_first5039rows.csv.gz"
SPARKOV_STREAM = DATA / "sparkov" / "fraudTest_first5116rows.csv.gz"
RECEIPTS_TRAIN = DATA / "sroie" / "sroie_train_metadata.jsonl.gz"
RECEIPTS_TEST = DATA / "sroie" / "sroie_test_metadata.jsonl.gz"
FILINGS = DATA / "sec" / "sec_8k_items.jsonl.gz"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bootstrap servers of a real Tansu broker (in memory) shared by the session."""
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(free_port(), log_file=log_file) as running:
        yield running.bootstrap_servers


@pytest.fixture(scope="session")
def device() -> DeviceChoice:
    return choose_device("auto")


@pytest.fixture(scope="session")
def embedder(device: DeviceChoice):
    from processor.models.embedder import TextEmbedder

    return TextEmbedder(device)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, embedder, device) -> Path:
    """A real model artifact: trained on sparkov history, with a receipt novelty reference."""
    from processor.models import artifact
    from processor.train import build_references, load_events, train_scorer
    from schemas import DocumentV1, TransactionV1

    events, labels = load_events("sparkov", [SPARKOV_HISTORY], None, TransactionV1)
    scorer, manifest = train_scorer(events, labels, embedder, epochs=8, device=device)
    receipts, _ = load_events("sroie", [RECEIPTS_TRAIN], 60, DocumentV1)
    references = build_references(embedder, receipts, max_chunks=8)
    out = tmp_path_factory.mktemp("model")
    artifact.save(out, scorer, manifest, references)
    return out


@pytest.fixture(scope="session")
def bundle(model_dir: Path, device: DeviceChoice):
    from processor.models import artifact

    return artifact.load(model_dir, device.device)
