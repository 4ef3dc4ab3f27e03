"""JSON Schema of each file kind, straight from the models, for editors (yaml-language-server)."""

from __future__ import annotations

from typing import Any

from .model import FILE_KINDS, model_path_hint


def json_schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, model in FILE_KINDS.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"campaignd {kind} file ({model_path_hint(kind)})"
        out[kind] = schema
    return out
