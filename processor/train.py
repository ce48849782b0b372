"""`processor train`: fit the anomaly scorer (and the document reference set) on history."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from processor.device import DeviceChoice, choose_device
from processor.errors import ProcessorError
from processor.models import artifact
from processor.models.anomaly import AnomalyScorer, fit_scorer
from processor.models.embedder import TextEmbedder
from processor.models.features import discover_spec, merchant_text, tabular
from processor.models.metrics import detection_metrics
from schemas import DocumentV1, TransactionV1

log = logging.getLogger(__name__)


class TrainingError(ProcessorError):
    """History is unusable for training; the message says why."""


def validate_items(items: Iterable, model: type, source: str) -> tuple[list, list]:
    """Validated events and their labels; invalid rows are counted and skipped."""
    events, labels, bad = [], [], 0
    for item in items:
        try:
            events.append(model.model_validate(item.event))
        except ValidationError:
            bad += 1
            continue
        labels.append(item.label)
    if bad:
        log.warning("skipped invalid history rows source=%s count=%d", source, bad)
    return events, labels


def load_events(kind: str, paths: list[Path], limit: int | None, model: type) -> tuple[list, list]:
    """Read a source into validated events and labels."""
    from processor.sources import open_source

    return validate_items(open_source(kind, paths, limit=limit), model, kind)


def text_vectors(embedder: TextEmbedder | None, events: list[TransactionV1]) -> np.ndarray | None:
    if embedder is None:
        return None
    return embedder.embed_short([merchant_text(e) for e in events])


def train_scorer(
    events: list[TransactionV1],
    labels: list[int | None],
    embedder: TextEmbedder | None,
    text_dims: int = 4,
    alert_rate: float = 0.01,
    holdout: float = 0.2,
    epochs: int = 30,
    seed: int = 0,
    device: DeviceChoice | None = None,
) -> tuple[AnomalyScorer, dict]:
    """Fit on the older part of history, calibrate and validate on the newest ``holdout``."""
    if len(events) < 50:
        raise TrainingError(f"{len(events)} valid transactions is too few to train on (need 50+)")
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    events = [events[i] for i in order]
    labels = [labels[i] for i in order]
    cut = int(len(events) * (1 - holdout))
    fit_events, val_events = events[:cut], events[cut:]
    if embedder is None:
        text_dims = 0
    spec = discover_spec(fit_events, text_dims)
    text = text_vectors(embedder if text_dims else None, events)
    fit_text = text[:cut] if text is not None else None
    val_text = text[cut:] if text is not None else None
    torch_device = device.device if device else None
    scorer = fit_scorer(
        tabular(fit_events, spec),
        fit_text,
        spec,
        tabular(val_events, spec),
        val_text,
        epochs=epochs,
        seed=seed,
        **({"device": torch_device} if torch_device else {}),
    )
    threshold = 1.0 - alert_rate
    manifest = {
        "data_fingerprint": artifact.fingerprint(
            [f"{e.event_id}|{e.amount}|{e.occurred_at.isoformat()}" for e in events]
        ),
        "n_fit": len(fit_events),
        "n_validation": len(val_events),
        "threshold": threshold,
        "alert_rate": alert_rate,
        "embedding_model": embedder.name if embedder else None,
        "seed": seed,
        "epochs": epochs,
    }
    val_labels = labels[cut:]
    if all(label is not None for label in val_labels) and len(set(val_labels)) == 2:
        scores = scorer.score_matrix(tabular(val_events, spec), val_text).calibrated
        manifest["validation"] = detection_metrics(np.asarray(val_labels), scores, threshold)
    return scorer, manifest


def build_references(
    embedder: TextEmbedder, documents: list[DocumentV1], max_chunks: int
) -> tuple[list[str], np.ndarray]:
    log.info("embedding reference documents count=%d", len(documents))
    vectors = []
    step = 32
    with tqdm(total=len(documents), unit="doc", desc="reference documents", disable=None) as bar:
        for start in range(0, len(documents), step):
            part = documents[start : start + step]
            vectors += embedder.embed_documents([d.text for d in part], max_chunks=max_chunks)
            bar.update(len(part))
    return [d.event_id for d in documents], np.stack([v.vector for v in vectors])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        required=True,
        choices=["sparkov", "fdh"],
        help="format of the transaction history files",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="history files (csv / csv.gz)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts/model"),
        help="artifact folder to write (default: %(default)s)",
    )
    parser.add_argument(
        "--documents",
        action="append",
        default=[],
        metavar="KIND:PATH",
        help="reference documents for novelty, e.g. sroie:data/sroie/x.jsonl.gz (repeatable)",
    )
    parser.add_argument("--limit", type=int, default=None, help="read at most N history rows")
    parser.add_argument(
        "--documents-limit",
        type=int,
        default=None,
        help="read at most N documents from each --documents file",
    )
    parser.add_argument(
        "--text-dims",
        type=int,
        default=4,
        help="PCA dimensions kept of the merchant text embedding; 0 leaves the "
        "text out (default: %(default)s)",
    )
    parser.add_argument(
        "--alert-rate",
        type=float,
        default=0.01,
        help="share of normal traffic that should raise an alert; sets the "
        "threshold (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")


def parse_document_specs(specs: Iterable[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in specs:
        kind, sep, path = spec.partition(":")
        if not sep or kind not in ("sroie", "sec"):
            raise TrainingError(f"--documents {spec!r}: write KIND:PATH with KIND sroie or sec")
        out.append((kind, Path(path)))
    return out


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    device = choose_device(args.device)
    doc_specs = parse_document_specs(args.documents)
    events, labels = load_events(args.source, args.paths, args.limit, TransactionV1)
    log.info("history loaded source=%s events=%d", args.source, len(events))
    needs_text = args.text_dims > 0 or doc_specs
    embedder = TextEmbedder(device) if needs_text else None
    scorer, manifest = train_scorer(
        events,
        labels,
        embedder,
        args.text_dims,
        args.alert_rate,
        epochs=args.epochs,
        seed=args.seed,
        device=device,
    )
    manifest["trained_on"] = {"source": args.source, "files": [p.name for p in args.paths]}
    references = None
    if doc_specs and embedder is not None:
        documents = []
        for kind, path in doc_specs:
            documents += load_events(kind, [path], args.documents_limit, DocumentV1)[0]
        references = build_references(embedder, documents, max_chunks=64)
    artifact.save(args.out, scorer, manifest, references)
    saved = artifact.load(args.out)
    print(f"model {saved.version} written to {args.out} in {time.monotonic() - started:.1f} s")
    print(f"  features: {len(scorer.spec.names)}  threshold: {manifest['threshold']:.3f}")
    if "validation" in manifest:
        v = manifest["validation"]
        print(
            f"  validation (newest {manifest['n_validation']} events): ROC-AUC {v['roc_auc']:.3f}"
            f"  AP {v['average_precision']:.3f}"
        )
    return 0
