"""The models with their real weights: embeddings, chunking, the anomaly scorer, artifacts."""

from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from processor.models import artifact
from processor.models.features import discover_spec, merchant_text
from processor.sources import open_source
from schemas import TransactionV1
from tests.conftest import SPARKOV_STREAM

pytestmark = pytest.mark.slow


def stream(n: int) -> list[TransactionV1]:
    return [
        TransactionV1.model_validate(e.event)
        for e in islice(open_source("sparkov", SPARKOV_STREAM), n)
    ]


def test_long_text_is_split_into_chunks_that_cover_all_of_it(embedder) -> None:
    text = " ".join(f"word{i}" for i in range(3000))
    chunks, tokens, truncated = embedder.chunk(text, max_chunks=1000)
    assert tokens > embedder.window and len(chunks) > 1 and not truncated
    assert text.startswith(chunks[0]) and text.endswith(chunks[-1])
    for chunk in chunks:
        assert len(embedder.model.tokenizer(chunk, add_special_tokens=False)["input_ids"]) <= (
            embedder.window - 2
        )


def test_more_chunks_than_allowed_is_reported_as_truncated(embedder) -> None:
    text = "revenue " * 5000
    [vector] = embedder.embed_documents([text], max_chunks=3)
    assert vector.truncated and vector.chunks == 3 and vector.tokens == 5000


def test_document_vectors_are_normalised_and_similar_texts_are_close(embedder) -> None:
    a, b, c = embedder.embed_documents(
        [
            "The company reported quarterly revenue growth and raised its guidance.",
            "Quarterly revenues grew and the firm lifted its outlook.",
            "Receipt: 2 x coffee, 1 x bagel, total 9.50, paid cash.",
        ]
    )
    for v in (a, b, c):
        assert np.linalg.norm(v.vector) == pytest.approx(1.0, abs=1e-4)
    assert float(a.vector @ b.vector) > float(a.vector @ c.vector) + 0.2


def test_cached_short_embeddings_equal_fresh_ones(embedder) -> None:
    texts = ["Kirlin and Sons (personal_care)", "Sporer-Keebler (grocery_pos)"]
    first = embedder.embed_short(texts)
    again = embedder.embed_short(list(reversed(texts)))
    np.testing.assert_array_equal(first, again[::-1])
    fresh = embedder._encode(texts)
    np.testing.assert_allclose(first, fresh, atol=1e-6)


def test_scores_are_calibrated_to_unit_interval(bundle, embedder) -> None:
    events = stream(500)
    scores = bundle.scorer.score(events, embedder.embed_short([merchant_text(e) for e in events]))
    assert np.all((scores.calibrated >= 0) & (scores.calibrated <= 1))
    assert 0.2 < float(np.median(scores.calibrated)) < 0.8  # typical traffic is mid-range
    assert np.all((scores.group_shares >= 0) & (scores.group_shares <= 1))


def test_an_extreme_amount_scores_higher_and_is_explained_by_the_amount(bundle, embedder) -> None:
    event = stream(1)[0]
    huge = event.model_copy(update={"amount": event.amount * 100_000})
    text = embedder.embed_short([merchant_text(event)] * 2)
    scores = bundle.scorer.score([event, huge], text)
    assert scores.raw[1] > scores.raw[0]
    assert scores.calibrated[1] >= bundle.threshold
    assert scores.top(1, k=1)[0][0] == "amount"


def test_a_saved_artifact_loads_back_with_identical_scores(model_dir: Path, bundle, embedder):
    events = stream(50)
    text = embedder.embed_short([merchant_text(e) for e in events])
    again = artifact.load(model_dir)
    np.testing.assert_allclose(
        again.scorer.score(events, text).raw, bundle.scorer.score(events, text).raw, rtol=1e-5
    )
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for key in ("version", "data_fingerprint", "features", "threshold", "files"):
        assert key in manifest
    assert manifest["validation"]["roc_auc"] > 0.5


def test_a_tampered_artifact_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    prep = json.loads((copy / "preprocessing.json").read_text())
    prep["mean"][0] += 1.0
    (copy / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(artifact.ArtifactError, match="SHA-256"):
        artifact.load(copy)


def test_artifact_files_are_data_not_code(model_dir: Path) -> None:
    for path in model_dir.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80", f"{path.name} looks like a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text())


def test_a_missing_artifact_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(artifact.ArtifactError, match="processor train"):
        artifact.load(tmp_path / "nothing")


def test_features_constant_in_history_are_left_out() -> None:
    events = stream(200)
    no_customer = [e.model_copy(update={"customer": None}) for e in events]
    spec = discover_spec(no_customer, text_dims=2)
    assert "distance_km" not in spec.base and "customer_age" not in spec.base
    assert "log_amount" in spec.base
    assert len(spec.names) == len(spec.base) + len(spec.categories) + 2


RARE_SCRIPTS = [
    "東京都港区 領収書 合計 1200円",
    "ጠቅላላ ድምር 120 ብር",  # Ge'ez: mostly [UNK] for this vocabulary
    "🧾💳✅",
    "المجموع 12.00 درهم",
    "סה״כ 12.00 ₪",
]


@pytest.mark.parametrize("text", RARE_SCRIPTS)
def test_scripts_the_tokenizer_barely_knows_embed_to_a_finite_unit_vector(embedder, text) -> None:
    [vector] = embedder.embed_documents([text])
    assert np.isfinite(vector.vector).all() and not vector.truncated and vector.chunks == 1
    assert np.linalg.norm(vector.vector) == pytest.approx(1.0, abs=1e-3)
    short = embedder.embed_short([text])
    assert np.isfinite(short).all()


def test_long_cjk_text_is_chunked_within_the_window(embedder) -> None:
    text = "東京都港区芝公園" * 400  # about one token per character
    chunks, tokens, truncated = embedder.chunk(text, max_chunks=1000)
    assert tokens > embedder.window and len(chunks) > 1 and not truncated
    assert text.startswith(chunks[0]) and text.endswith(chunks[-1])
    for chunk in chunks:
        ids = embedder.model.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        assert len(ids) <= embedder.window - 2
