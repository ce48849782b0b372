"""Versioned model artifacts: a manifest, tensors in safetensors, preprocessing in JSON.

Loading never runs code from the artifact (no pickle): every file is data, and each file's
SHA-256 in the manifest is checked before use.

    <dir>/manifest.json        version, data fingerprint, features, metrics, threshold, files
    <dir>/model.safetensors    autoencoder weights
    <dir>/preprocessing.json   scaler, PCA and calibration parameters
    <dir>/documents.safetensors, documents.json   the novelty reference corpus (optional)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from processor.errors import ProcessorError
from processor.models.anomaly import CPU, AnomalyScorer, Autoencoder, Preprocessing
from processor.models.features import FeatureSpec
from processor.models.novelty import DocumentReference

log = logging.getLogger(__name__)

FORMAT = "finstream-model/1"


class ArtifactError(ProcessorError):
    """A model artifact is missing, incomplete, corrupted or of another format."""


@dataclass
class ModelBundle:
    scorer: AnomalyScorer
    manifest: dict
    references: DocumentReference | None

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(items: list[str]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def save(
    folder: Path,
    scorer: AnomalyScorer,
    manifest: dict,
    references: tuple[list[str], np.ndarray] | None,
) -> Path:
    """Write an artifact; ``manifest`` gets the format, version and file hashes added."""
    folder.mkdir(parents=True, exist_ok=True)
    net = scorer.net
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "preprocessing.json").write_text(json.dumps(scorer.prep.to_json()))
    files = ["model.safetensors", "preprocessing.json"]
    if references is not None:
        ids, vectors = references
        save_numpy({"vectors": np.asarray(vectors, np.float32)}, folder / "documents.safetensors")
        (folder / "documents.json").write_text(json.dumps({"ids": ids}))
        files += ["documents.safetensors", "documents.json"]
    created = datetime.now(UTC)
    full = {
        "format": FORMAT,
        "version": f"{created:%Y%m%dT%H%M%SZ}-{manifest['data_fingerprint'][:8]}",
        "created_at": created.isoformat(),
        **manifest,
        "features": scorer.spec.to_json(),
        "network": {
            "width": net.net[0].in_features,
            "hidden": net.net[0].out_features,
            "bottleneck": net.net[2].out_features,
        },
        "files": {name: _sha256(folder / name) for name in files},
    }
    (folder / "manifest.json").write_text(json.dumps(full, indent=2) + "\n")
    for name in [*files, "manifest.json"]:
        (folder / name).chmod(0o644)  # safetensors writes 0600; a service user must read it
    return folder


def load(folder: Path, device: torch.device = CPU) -> ModelBundle:
    """Load and verify an artifact; raises ArtifactError that says what to do."""
    manifest_path = Path(folder) / "manifest.json"
    if not manifest_path.exists():
        raise ArtifactError(
            f"no model at {folder} (missing manifest.json): train one with `processor train "
            f"--source sparkov data/sparkov/fraudTrain_first5039rows.csv.gz --out {folder}`, "
            "or point PROCESSOR_MODEL_DIR at an artifact"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder} is format {manifest.get('format')!r}, expected {FORMAT}")
    for name, digest in manifest["files"].items():
        path = Path(folder) / name
        if not path.exists() or _sha256(path) != digest:
            raise ArtifactError(f"{path} is missing or does not match its SHA-256 in the manifest")

    spec = FeatureSpec.from_json(manifest["features"])
    shape = manifest["network"]
    net = Autoencoder(shape["width"], shape["hidden"], shape["bottleneck"])
    net.load_state_dict(load_file(Path(folder) / "model.safetensors"))
    prep = Preprocessing.from_json(json.loads((Path(folder) / "preprocessing.json").read_text()))
    scorer = AnomalyScorer(spec, prep, net, device)

    references = None
    if "documents.json" in manifest["files"]:
        ids = json.loads((Path(folder) / "documents.json").read_text())["ids"]
        vectors = load_numpy(Path(folder) / "documents.safetensors")["vectors"]
        references = DocumentReference(ids, vectors, device)
    log.info("model loaded version=%s features=%d", manifest["version"], len(spec.names))
    return ModelBundle(scorer, manifest, references)
