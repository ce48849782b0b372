"""`processor evaluate`: detection quality of a model on labelled transactions.

With ``--protocol fdh`` it runs the unsupervised benchmark of the fraud-detection handbook's
data (train one week, skip a week, test the next) and fits an Isolation Forest on the very same
features beside the autoencoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

from processor.device import choose_device
from processor.models import artifact
from processor.models.anomaly import AnomalyScorer
from processor.models.embedder import TextEmbedder
from processor.models.features import tabular
from processor.models.metrics import detection_metrics
from processor.train import load_events, text_vectors, train_scorer, validate_items
from schemas import TransactionV1

log = logging.getLogger(__name__)


def score_events(
    scorer: AnomalyScorer, events: list[TransactionV1], embedder: TextEmbedder | None
) -> np.ndarray:
    text = text_vectors(embedder, events) if scorer.spec.text_dims else None
    return scorer.score(events, text).calibrated


def isolation_forest_scores(
    scorer: AnomalyScorer,
    train_events: list[TransactionV1],
    test_events: list[TransactionV1],
    embedder: TextEmbedder | None,
    n_estimators: int,
    seed: int,
) -> np.ndarray:
    """Fit sklearn's Isolation Forest on the scorer's own design matrix; higher = stranger."""

    def design(events: list[TransactionV1]) -> np.ndarray:
        text = text_vectors(embedder, events) if scorer.spec.text_dims else None
        return scorer.design(tabular(events, scorer.spec), text).cpu().numpy()

    forest = IsolationForest(n_estimators=n_estimators, random_state=seed)
    forest.fit(design(train_events))
    return -forest.score_samples(design(test_events))


def fdh_benchmark(data_dir: Path, seeds: list[int], text_dims: int, epochs: int) -> dict:
    from processor.sources import fdh_protocol_split

    train_items, test_items = fdh_protocol_split(data_dir)
    train_events, train_labels = validate_items(train_items, TransactionV1, "fdh")
    test_events, labels = validate_items(test_items, TransactionV1, "fdh")
    test_labels = np.asarray(labels, dtype=int)
    log.info(
        "fdh protocol train=%d test=%d test_frauds=%d",
        len(train_events),
        len(test_events),
        int(test_labels.sum()),
    )
    device = choose_device("auto")
    embedder = TextEmbedder(device) if text_dims else None
    rows = []
    for seed in seeds:
        scorer, manifest = train_scorer(
            train_events,
            list(train_labels),
            embedder,
            text_dims,
            epochs=epochs,
            seed=seed,
            device=device,
        )
        ae = detection_metrics(
            test_labels, score_events(scorer, test_events, embedder), manifest["threshold"]
        )
        row = {"seed": seed, "autoencoder": ae}
        for trees in (10, 100):
            scores = isolation_forest_scores(
                scorer, train_events, test_events, embedder, trees, seed
            )
            row[f"isolation_forest_{trees}"] = detection_metrics(test_labels, scores, np.inf)
        rows.append(row)
    return {
        "train_events": len(train_events),
        "test_events": len(test_events),
        "test_frauds": int(test_labels.sum()),
        "features": scorer.spec.names,
        "runs": rows,
    }


def summarise_runs(runs: list[dict]) -> dict:
    """Mean, min and max of ROC-AUC and AP per model over the seeds."""
    out = {}
    for name in (k for k in runs[0] if k != "seed"):
        out[name] = {}
        for metric, key in (("ROC-AUC", "roc_auc"), ("AP", "average_precision")):
            values = [run[name][key] for run in runs]
            out[name][metric] = {
                "mean": float(np.mean(values)),
                "min": min(values),
                "max": max(values),
            }
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("artifacts/model"),
        help="artifact to evaluate (default: %(default)s)",
    )
    parser.add_argument("--source", choices=["sparkov", "fdh"], default="sparkov")
    parser.add_argument("paths", nargs="*", type=Path, help="labelled files")
    parser.add_argument(
        "--protocol",
        choices=["fdh"],
        default=None,
        help="run a published benchmark protocol instead (paths: the data folder)",
    )
    parser.add_argument(
        "--seeds", default="0,1,2,3,4", help="fdh protocol seeds (default: %(default)s)"
    )
    parser.add_argument(
        "--text-dims",
        type=int,
        default=0,
        help="fdh protocol: merchant-text PCA dims (default: %(default)s: the "
        "fdh merchant text is only a terminal number)",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def _print_metrics(name: str, m: dict) -> None:
    auc, ap = m.get("roc_auc", float("nan")), m.get("average_precision", float("nan"))
    line = f"  {name:<22} ROC-AUC {auc:.3f}  AP {ap:.3f}"
    if np.isfinite(m["threshold"]):
        line += (
            f"  precision {m['precision_at_threshold']:.3f}  recall "
            f"{m['recall_at_threshold']:.3f} at threshold {m['threshold']:.3f} "
            f"({m['flagged']} flagged)"
        )
    print(line)


def main(args: argparse.Namespace) -> int:
    if args.protocol == "fdh":
        data_dir = (
            args.paths[0] if args.paths else Path("../shared/data/fdh-simulated-transactions")
        )
        seeds = [int(s) for s in args.seeds.split(",")]
        result = fdh_benchmark(data_dir, seeds, args.text_dims, args.epochs)
        print(
            f"fdh unsupervised protocol: train {result['train_events']} events, "
            f"test {result['test_events']} ({result['test_frauds']} frauds), "
            f"{len(result['features'])} features"
        )
        for row in result["runs"]:
            print(f"seed {row['seed']}:")
            for name, m in row.items():
                if name != "seed":
                    _print_metrics(name, m)
        print(f"mean [min, max] over {len(seeds)} seeds:")
        for name, figures in summarise_runs(result["runs"]).items():
            print(
                f"  {name:<22} "
                + "  ".join(
                    f"{metric} {f['mean']:.3f} [{f['min']:.3f}, {f['max']:.3f}]"
                    for metric, f in figures.items()
                )
            )
        result["summary"] = summarise_runs(result["runs"])
        _write(args.json, result)
        return 0
    if not args.paths:
        print("error: give labelled files, or --protocol fdh", file=sys.stderr)
        return 2
    device = choose_device("auto")
    bundle = artifact.load(args.model_dir, device.device)
    events, labels = load_events(args.source, args.paths, None, TransactionV1)
    embedder = TextEmbedder(device) if bundle.scorer.spec.text_dims else None
    scores = score_events(bundle.scorer, events, embedder)
    result = detection_metrics(np.asarray(labels, dtype=int), scores, bundle.threshold)
    print(f"model {bundle.version} on {len(events)} events ({result['positives']} positives):")
    _print_metrics("autoencoder", result)
    _write(args.json, result)
    return 0


def _write(path: Path | None, result: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {path}")
