"""Detection-quality figures for labelled data."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def detection_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, average precision, and precision/recall of ``scores >= threshold``."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    flagged = scores >= threshold
    true_pos = int(np.sum(flagged & (labels == 1)))
    positives = int(labels.sum())
    out = {
        "events": int(len(labels)),
        "positives": positives,
        "flagged": int(flagged.sum()),
        "true_positives": true_pos,
        "precision_at_threshold": true_pos / int(flagged.sum()) if flagged.any() else 0.0,
        "recall_at_threshold": true_pos / positives if positives else 0.0,
        "threshold": float(threshold),
    }
    if 0 < positives < len(labels):
        out["roc_auc"] = float(roc_auc_score(labels, scores))
        out["average_precision"] = float(average_precision_score(labels, scores))
    return out
