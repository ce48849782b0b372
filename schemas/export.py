"""Write the JSON Schema of every model to a folder, one file per model and version."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import ALL_MODELS

DEFAULT_DIR = Path(__file__).parent / "json"
INPUT_NAMES = ("transaction.v1", "document.v1")


def render() -> dict[str, str]:
    """Return file name -> JSON Schema text for every model."""
    out = {}
    for name, model in ALL_MODELS.items():
        mode = "validation" if name in INPUT_NAMES else "serialization"
        schema = model.model_json_schema(mode=mode)
        schema["$id"] = f"{name}.schema.json"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(folder: Path = DEFAULT_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render().items():
        path = folder / file_name
        path.write_text(text)
        written.append(path)
    return written
