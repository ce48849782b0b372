"""Document novelty: how far a document's embedding is from every document seen in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NEAR_DUPLICATE_SIMILARITY = 0.97


@dataclass(frozen=True)
class NoveltyResult:
    score: float
    nearest_id: str | None
    nearest_similarity: float
    near_duplicate: bool


class DocumentReference:
    """A reference corpus of L2-normalised document embeddings and their event ids."""

    def __init__(self, ids: list[str], vectors: np.ndarray, device: torch.device) -> None:
        if len(ids) != len(vectors):
            raise ValueError("reference ids and vectors differ in length")
        self.ids = ids
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self._matrix = torch.as_tensor(self.vectors, device=device)
        self.device = device

    def __len__(self) -> int:
        return len(self.ids)

    @torch.inference_mode()
    def novelty(self, vectors: np.ndarray) -> list[NoveltyResult]:
        """Novelty = 1 - cosine similarity to the nearest reference document, in [0, 1]."""
        if not self.ids:
            return [NoveltyResult(1.0, None, 0.0, False) for _ in vectors]
        query = torch.as_tensor(np.asarray(vectors, dtype=np.float32), device=self.device)
        best, index = (query @ self._matrix.T).max(dim=1)
        out = []
        for sim, i in zip(best.tolist(), index.tolist(), strict=True):
            score = float(min(1.0, max(0.0, 1.0 - sim)))
            near = sim >= NEAR_DUPLICATE_SIMILARITY
            out.append(NoveltyResult(score, self.ids[i], float(sim), near))
        return out
