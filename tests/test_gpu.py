"""CUDA path: run by ops/gpu_check.sh on a GPU machine; skipped where torch sees no CUDA."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from processor.device import choose_device
from processor.models import artifact
from processor.models.features import merchant_text
from processor.sources import open_source
from schemas import TransactionV1
from tests.conftest import FILINGS, SPARKOV_STREAM

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_auto_picks_cuda_in_half_precision() -> None:
    choice = choose_device("auto")
    assert choice.device.type == "cuda" and choice.half


def test_gpu_embeddings_match_cpu_embeddings(embedder) -> None:
    from processor.device import DeviceChoice
    from processor.models.embedder import TextEmbedder

    cpu = TextEmbedder(DeviceChoice(torch.device("cpu"), False, "test"))
    texts = [e.event["text"] for e in islice(open_source("sec", FILINGS), 8)]
    gpu_vectors = np.stack([v.vector for v in embedder.embed_documents(texts)])
    cpu_vectors = np.stack([v.vector for v in cpu.embed_documents(texts)])
    cosine = np.sum(gpu_vectors * cpu_vectors, axis=1)
    assert np.all(cosine > 0.999), cosine


def test_gpu_scores_match_cpu_scores(model_dir, embedder) -> None:
    events = [
        TransactionV1.model_validate(e.event)
        for e in islice(open_source("sparkov", SPARKOV_STREAM), 512)
    ]
    text = embedder.embed_short([merchant_text(e) for e in events]).astype(np.float32)
    on_gpu = artifact.load(model_dir, torch.device("cuda")).scorer.score(events, text)
    on_cpu = artifact.load(model_dir, torch.device("cpu")).scorer.score(events, text)
    np.testing.assert_allclose(on_gpu.raw, on_cpu.raw, rtol=1e-3, atol=1e-5)


def test_gpu_metrics_report_the_device() -> None:
    from prometheus_client import generate_latest

    from processor.metrics import Metrics

    text = generate_latest(Metrics(gpu=True).registry).decode()
    assert "processor_gpu_available 1.0" in text
    assert 'processor_gpu_memory_total_bytes{gpu="0"}' in text
