"""Problems found in a config root, and turning pydantic's errors into operator sentences.

Every problem reads ``path:line:col: what is wrong — what to do``.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .yamlpos import Located, Path_

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str  # as the operator should see it: relative to the config root where possible
    line: int
    col: int
    message: str
    severity: Severity = "error"
    kind: str = ""  # settings | service | template | campaign | audience
    object_id: str = ""

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "kind": self.kind,
            "object": self.object_id,
            "message": self.message,
        }


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field annotations keyed by the name used in files (the alias where there is one)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        out[info.alias or name] = info.annotation
    return out


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a (possibly Optional/Annotated/tuple/dict) annotation can hold."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _inner_models(args[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        found: list[type[BaseModel]] = []
        for a in args[1:] if origin is dict else args:
            if a is not Ellipsis:
                found.extend(_inner_models(a))
        return found
    return []


def _model_at(root: type[BaseModel], data: Any, loc: Path_) -> type[BaseModel] | None:
    """Which model class validates the mapping found at ``loc`` in ``data``."""
    candidates = [root]
    node = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        next_candidates: list[type[BaseModel]] = []
        for model in candidates:
            ann = _model_fields(model).get(part)
            if ann is not None:
                next_candidates.extend(_inner_models(ann))
        if not next_candidates:
            # dict values (e.g. `domains: {gmail.com: {...}}`) keep the candidates of the dict
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            return None
        candidates = next_candidates
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and len(candidates) > 1:
        # For unions of mappings pick the one whose keys fit best.
        candidates.sort(key=lambda m: -len(set(node) & set(_model_fields(m))))
    return candidates[0] if candidates else None


def _data_path(data: Any, loc: tuple[int | str, ...]) -> tuple[Path_, Path_]:
    """Split pydantic's loc into the part that exists in the data and the rest.

    Pydantic inserts union branch names and validator tags into locs; those are dropped.
    """
    path: list[str | int] = []
    node = data
    rest: list[str | int] = []
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            path.append(part)
            node = node[part]  # type: ignore[index]  # the isinstance checks above guard it
        elif isinstance(part, str) and (part[:1].isupper() or "[" in part or part[:1] == "_"):
            continue  # a union branch or validator tag, not a key
        else:
            rest.append(part)
    return tuple(path), tuple(rest)


def _label(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_TYPE_WORDS = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text (quote it if YAML read it as something else)",
    "dict_type": "expected a mapping of key: value",
    "model_type": "expected a mapping of key: value",
    "model_attributes_type": "expected a mapping of key: value",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "date_parsing": "expected a date like 2026-11-20",
    "date_type": "expected a date like 2026-11-20",
    "date_from_datetime_inexact": "expected a date like 2026-11-20, without a time",
    "datetime_parsing": "expected a date-time like 2026-12-01T10:00:00+01:00",
    "datetime_type": "expected a date-time like 2026-12-01T10:00:00+01:00",
    "datetime_from_date_parsing": "expected a date-time like 2026-12-01T10:00:00+01:00",
}


def _describe(err: ErrorDetails, data: Any, model: type[BaseModel]) -> tuple[Path_, bool, str]:
    """(data path for the position, whether to point at the key, message)."""
    loc = tuple(err["loc"])
    path, rest = _data_path(data, loc)
    label = _label(path + rest)
    typ = err["type"]
    msg = err["msg"]
    if typ == "extra_forbidden":
        parent_model = _model_at(model, data, path[:-1])
        known = sorted(_model_fields(parent_model)) if parent_model else []
        key = str(path[-1]) if path else str(loc[-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        where = _label(path[:-1])
        return path, True, f"unknown key {key!r}{' in ' + where if where else ''} — {hint}"
    if typ == "missing":
        missing = str(rest[0]) if rest else str(loc[-1])
        where = _label(path)
        return (
            path,
            True,
            f"missing required key {missing!r}{' in ' + where if where else ''} — add it",
        )
    prefix = f"{label}: " if label else ""
    if typ == "value_error":
        text = msg.removeprefix("Value error, ")
        return path, False, f"{prefix}{text}"
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return path, False, f"{prefix}{err['input']!r} is not allowed — use one of {expected}"
    if typ in _TYPE_WORDS:
        return path, False, f"{prefix}{_TYPE_WORDS[typ]}, got {err['input']!r}"
    text = msg[0].lower() + msg[1:] if msg else typ
    return path, False, f"{prefix}{text.replace('Input should', 'should')}"


def problems_from_validation(
    exc: ValidationError,
    located: Located,
    model: type[BaseModel],
    *,
    file: str,
    kind: str,
    object_id: str,
) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out: list[Problem] = []
    errors = exc.errors(include_url=False)
    # A union (e.g. a feedback entry) reports one error per branch; keep the branch that
    # got furthest rather than confusing the operator with every alternative.
    for err in errors:
        path, at_key, message = _describe(err, located.data, model)
        line, col = located.position(path, key=at_key)
        sig = (line, col, message)
        if sig in seen:
            continue
        seen.add(sig)
        out.append(Problem(file, line, col, message, "error", kind, object_id))
    return out
