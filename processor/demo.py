"""`processor demo`: the main job end to end on real data, on one machine.

1. start the embedded broker and create the topics;
2. train the anomaly model on the history part of the shipped sparkov sample, and the novelty
   reference on real receipts and SEC filings;
3. start the processor, and replay the stream part (real transactions, real documents, and a
   few deliberately malformed records) through Kafka;
4. wait until the input is drained, stop, and read every output topic back to print a summary:
   in = enriched + dead-lettered + skipped, throughput, end-to-end latency, anomalies flagged,
   and detection quality on the labelled stream. The summary is also written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np

from processor.broker import EmbeddedBroker, ensure_topics, free_port
from processor.config import Settings, Topics
from processor.device import choose_device
from processor.metrics import Health, Metrics
from processor.models import artifact
from processor.models.embedder import TextEmbedder
from processor.models.metrics import detection_metrics
from processor.pipeline.service import StreamProcessor
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from processor.train import build_references, load_events, train_scorer
from schemas import DocumentV1, TransactionV1

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent / "data"
HISTORY = DATA / "sparkov" / "fraudTrain_first5039rows.csv.gz"
STREAM = DATA / "sparkov" / "fraudTest_first5116rows.csv.gz"
RECEIPTS_TRAIN = DATA / "sroie" / "sroie_train_metadata.jsonl.gz"
RECEIPTS_STREAM = DATA / "sroie" / "sroie_test_metadata.jsonl.gz"
FILINGS = DATA / "sec" / "sec_8k_items.jsonl.gz"

MALFORMED: list[tuple[bytes | None, bytes | None]] = [
    (b"demo-bad-1", b"this is not JSON"),
    (b"demo-bad-2", b"\xff\xfe\x00 not UTF-8"),
    (
        b"demo-bad-3",
        b'{"event_id":"bad-3","occurred_at":"2020-06-21T12:00:00Z","account_id":"1",'
        b'"amount":"10.00","currency":"XYZ","merchant":{"name":"m"}}',
    ),
    (
        b"demo-bad-4",
        b'{"event_id":"bad-4","occurred_at":1592740800,"account_id":"1",'
        b'"amount":"10.00","currency":"USD","merchant":{"name":"m"}}',
    ),
    (b"demo-bad-5", None),  # a tombstone: skipped, not an error
]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/demo"),
        help="where the model, logs and summary go (default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="transactions replayed per second (default: %(default)s)",
    )
    parser.add_argument(
        "--doc-rate",
        type=float,
        default=4.0,
        help="documents replayed per second (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="replay at most N stream transactions (default: all 5,116)",
    )
    parser.add_argument(
        "--receipts",
        type=int,
        default=80,
        help="SROIE test receipts in the stream (default: %(default)s)",
    )
    parser.add_argument(
        "--filings",
        type=int,
        default=20,
        help="SEC 8-K sections in the stream (default: %(default)s)",
    )
    parser.add_argument(
        "--reference-receipts",
        type=int,
        default=300,
        help="SROIE train receipts in the novelty reference (default: %(default)s)",
    )
    parser.add_argument(
        "--reference-filings",
        type=int,
        default=40,
        help="SEC 8-K sections in the novelty reference, taken before the "
        "stream's (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    topics = Topics()
    with EmbeddedBroker(free_port(), log_file=args.workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, topics.all(), partitions=3)
        print(f"[1/4] broker up at {bootstrap}; topics: {', '.join(topics.all())}")

        device = choose_device("auto")
        embedder = TextEmbedder(device)
        filings = list(islice(open_source("sec", FILINGS), args.reference_filings + args.filings))
        reference_filings = filings[: args.reference_filings]
        bundle = _train(args.workdir / "model", embedder, reference_filings, device, args)
        print(
            f"[2/4] model {bundle.version} trained on {bundle.manifest['n_fit']} + "
            f"{bundle.manifest['n_validation']} history transactions; novelty reference of "
            f"{len(bundle.references or [])} documents; device {device.device} "
            f"({device.reason})"
        )

        settings = Settings(
            bootstrap_servers=bootstrap,
            group_id="finstream-demo",
            model_dir=args.workdir / "model",
            metrics_port=0,
            consumer_kafka={"session.timeout.ms": 6000},
        )
        processor = StreamProcessor(
            settings, bootstrap, Models(embedder, bundle, device), Metrics(gpu=True), Health()
        )
        thread = threading.Thread(target=processor.run, name="processor", daemon=True)
        thread.start()

        sent = _replay(bootstrap, topics, args, filings[args.reference_filings :])
        print(
            f"[3/4] replayed {sent['total']} records ({sent['transactions']} transactions, "
            f"{sent['documents']} documents, {sent['malformed']} malformed); processing..."
        )
        _wait_drained(processor, sent["total"], thread)
        processor.stop()
        thread.join(timeout=60)

        summary = _summarise(bootstrap, topics, processor, sent, bundle, started)
    path = args.workdir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    _print(summary)
    print(f"[4/4] summary written to {path}")
    return 0 if summary["accounted"] else 1


def _train(
    out: Path, embedder: TextEmbedder, filings: list, device, args: argparse.Namespace
) -> artifact.ModelBundle:
    events, labels = load_events("sparkov", [HISTORY], None, TransactionV1)
    scorer, manifest = train_scorer(events, labels, embedder, device=device)
    manifest["trained_on"] = {"source": "sparkov", "files": [HISTORY.name]}
    receipts, _ = load_events("sroie", [RECEIPTS_TRAIN], args.reference_receipts, DocumentV1)
    documents = receipts + [DocumentV1.model_validate(f.event) for f in filings]
    references = build_references(embedder, documents, max_chunks=64)
    artifact.save(out, scorer, manifest, references)
    return artifact.load(out, device.device)


def _replay(bootstrap: str, topics: Topics, args: argparse.Namespace, filings: list) -> dict:
    config = {"bootstrap.servers": bootstrap}
    stream = list(islice(open_source("sparkov", STREAM), args.limit))
    receipts = list(islice(open_source("sroie", RECEIPTS_STREAM), args.receipts))
    documents = receipts + filings
    results: dict[str, int] = {}

    def send_documents() -> None:
        stats = replay(
            documents,
            topics.documents,
            config,
            rate=args.doc_rate,
            total=len(documents),
            progress=False,
        )
        results["documents"] = stats.sent

    doc_thread = threading.Thread(target=send_documents, daemon=True)
    doc_thread.start()
    stats = replay(
        stream,
        topics.transactions,
        config,
        rate=args.rate,
        total=len(stream),
        extra_records=MALFORMED,
    )
    doc_thread.join()
    labels = {s.event["event_id"]: s.label for s in stream}
    return {
        "transactions": len(stream),
        "documents": results.get("documents", 0),
        "malformed": len(MALFORMED),
        "total": stats.sent + results.get("documents", 0),
        "labels": labels,
    }


def _wait_drained(processor: StreamProcessor, expected: int, thread: threading.Thread) -> None:
    last, since = -1, time.monotonic()
    while thread.is_alive():
        stats = processor.stats.as_dict()
        done = stats["enriched"] + stats["dead_lettered"] + stats["skipped"]
        if done >= expected and processor.tracker.in_flight() == 0:
            processor.commit()
            return
        if done != last:
            last, since = done, time.monotonic()
            log.info("progress done=%d of %d", done, expected)
        elif time.monotonic() - since > 120:
            raise TimeoutError(f"no progress for 120 s at {done} of {expected} records")
        time.sleep(1.0)


def _summarise(bootstrap, topics: Topics, processor, sent: dict, bundle, started) -> dict:
    stats = processor.stats.as_dict()
    latencies: dict[str, list[float]] = {"transaction": [], "document": []}
    scores, labels, first_in, last_out = [], [], None, None
    counts: Counter = Counter()
    for topic in (topics.transactions_enriched, topics.documents_enriched):
        kind = "transaction" if topic == topics.transactions_enriched else "document"
        for rec in read_topic(bootstrap, topic):
            out = json.loads(rec.value)
            counts[topic] += 1
            source_ts = out["source"]["timestamp_ms"]
            latencies[kind].append((rec.timestamp_ms - source_ts) / 1000)
            first_in = min(first_in or source_ts, source_ts)
            last_out = max(last_out or rec.timestamp_ms, rec.timestamp_ms)
            if kind == "transaction" and out["event_id"] in sent["labels"]:
                scores.append(out["anomaly"]["score"])
                labels.append(sent["labels"][out["event_id"]])
    dlq_reasons = Counter(
        json.loads(r.value)["reason"] for r in read_topic(bootstrap, topics.dead_letters)
    )
    alerts = sum(1 for _ in read_topic(bootstrap, topics.alerts))
    enriched = counts[topics.transactions_enriched] + counts[topics.documents_enriched]
    dead = sum(dlq_reasons.values())
    quality = detection_metrics(np.asarray(labels), np.asarray(scores), bundle.threshold)
    span = max((last_out - first_in) / 1000, 1e-9) if first_in and last_out else float("nan")
    return {
        "in": stats["consumed"],
        "enriched": enriched,
        "dead_lettered": dead,
        "dead_letter_reasons": dict(dlq_reasons),
        "skipped": stats["skipped"],
        "accounted": stats["consumed"] == enriched + dead + stats["skipped"] == sent["total"],
        "sent": sent["total"],
        "alerts": alerts,
        "throughput_events_per_s": enriched / span,
        "latency_seconds": {
            kind: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
            for kind, v in latencies.items()
            if v
        },
        "detection": quality,
        "model_version": bundle.version,
        "processor_counters": stats,
        "wall_seconds": time.monotonic() - started,
    }


def _print(s: dict) -> None:
    ok = "yes" if s["accounted"] else "NO"
    print("\n=== summary ===")
    print(
        f"in {s['in']} = enriched {s['enriched']} + dead-lettered {s['dead_lettered']} "
        f"+ skipped {s['skipped']}   (adds up: {ok}; produced {s['sent']})"
    )
    print(f"dead letters by reason: {s['dead_letter_reasons']}")
    print(
        f"throughput: {s['throughput_events_per_s']:.0f} enriched events/s "
        f"(first input to last output)"
    )
    for kind, lat in s["latency_seconds"].items():
        print(
            f"end-to-end latency {kind}: p50 {lat['p50'] * 1000:.0f} ms, "
            f"p99 {lat['p99'] * 1000:.0f} ms"
        )
    d = s["detection"]
    print(f"anomalies flagged: {s['alerts']} alerts (threshold {d['threshold']:.2f})")
    print(
        f"detection on the labelled stream ({d['events']} transactions, {d['positives']} "
        f"frauds): ROC-AUC {d.get('roc_auc', float('nan')):.3f}, AP "
        f"{d.get('average_precision', float('nan')):.3f}, precision "
        f"{d['precision_at_threshold']:.3f}, recall {d['recall_at_threshold']:.3f} at threshold"
    )
    print(f"wall time {s['wall_seconds']:.0f} s")
