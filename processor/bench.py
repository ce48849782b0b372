"""`processor bench`: model throughput per device, measured side by side in one run.

Figures from one run on one machine are comparable with each other (ratios), not with figures
from another run: the machines this is developed on are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from itertools import islice
from pathlib import Path

import torch

from processor.device import DeviceChoice
from processor.models.embedder import TextEmbedder
from processor.models.features import merchant_text
from processor.sources import open_source
from processor.train import train_scorer
from schemas import DocumentV1, TransactionV1

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent / "data"


def _timed(fn, repeat: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def bench_device(choice: DeviceChoice, transactions, documents, repeat: int) -> dict:
    embedder = TextEmbedder(choice)
    texts = [merchant_text(e) for e in transactions]
    unique = list(dict.fromkeys(texts))
    scorer, _ = train_scorer(
        transactions, [None] * len(transactions), embedder, epochs=3, device=choice
    )
    vectors = embedder.embed_short(texts)

    def embed_merchants() -> None:
        embedder._encode(unique)

    def score() -> None:
        scorer.score(transactions, vectors)

    def embed_documents() -> None:
        embedder.embed_documents([d.text for d in documents])

    chunks = sum(v.chunks for v in embedder.embed_documents([d.text for d in documents]))
    out = {
        "device": str(choice.device),
        "half": choice.half,
        "merchant_texts_per_s": len(unique) / _timed(embed_merchants, repeat),
        "transactions_scored_per_s": len(transactions) / _timed(score, repeat),
        "documents_per_s": len(documents) / _timed(embed_documents, repeat),
        "document_chunks": chunks,
    }
    out["chunks_per_s"] = out["documents_per_s"] * chunks / len(documents)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        default="cpu,cuda",
        help="comma-separated; cuda is skipped when absent (default: %(default)s)",
    )
    parser.add_argument("--transactions", type=int, default=4096)
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def main(args: argparse.Namespace) -> int:
    transactions = [
        TransactionV1.model_validate(e.event)
        for e in islice(open_source("sparkov", DATA / "sparkov"), args.transactions)
    ]
    documents = [
        DocumentV1.model_validate(e.event)
        for e in islice(open_source("sec", DATA / "sec"), args.documents)
    ]
    results = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        choice = DeviceChoice(torch.device(name), name == "cuda", "bench")
        results.append(bench_device(choice, transactions, documents, args.repeat))
    for r in results:
        print(
            f"{r['device']:<6} merchant texts {r['merchant_texts_per_s']:9.0f}/s  "
            f"scoring {r['transactions_scored_per_s']:9.0f} tx/s  "
            f"documents {r['documents_per_s']:7.1f}/s ({r['chunks_per_s']:.0f} chunks/s)"
        )
    if len(results) == 2:
        cpu, gpu = results
        for key in ("merchant_texts_per_s", "transactions_scored_per_s", "documents_per_s"):
            print(f"cuda/cpu {key}: {gpu[key] / cpu[key]:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
