"""YAML → plain Python data plus the line/column of every key and value.

PyYAML's composer keeps marks on nodes; we construct the data ourselves from the node tree so
that a validation error at ``("steps", 1, "after")`` can be pointed at the exact place in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # the C loader is ~10x faster; fall back silently where libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the wheel
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path_ = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based line and column


@dataclass
class Located:
    data: Any
    values: dict[Path_, Pos] = field(default_factory=dict)
    keys: dict[Path_, Pos] = field(default_factory=dict)
    # Structural problems the data model cannot see (duplicate keys, odd keys).
    problems: list[tuple[Pos, str]] = field(default_factory=list)

    def position(self, path: Path_, *, key: bool = False) -> Pos:
        """The closest known position for ``path``: the key itself, else its nearest parent."""
        p = tuple(path)
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (1, 1)
            p = p[:-1]
            key = True  # for a missing child, point at the parent's key, not its first value


class YamlSyntaxError(ValueError):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str) -> Located:
    """Parse one YAML document; raise ``YamlSyntaxError`` with a position if it is malformed."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or str(exc)
        if exc.context:
            what = f"{what} ({exc.context})"
        raise YamlSyntaxError(pos, f"YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError((1, 1), f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    out = Located(data=None)
    if node is None:
        return out
    constructor = yaml.SafeLoader("")
    try:
        out.data = _build(node, (), out, constructor, depth=0)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown !tag: reported like a syntax error
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(pos, f"YAML error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError((1, 1), f"YAML error: {exc}") from None
    return out


def _build(node: yaml.Node, path: Path_, out: Located, ctor: yaml.SafeLoader, *, depth: int) -> Any:
    out.values[path] = _mark(node)
    if depth > 50:  # billion-laughs style nesting; nothing legitimate is this deep
        out.problems.append((_mark(node), "nesting is deeper than 50 levels — flatten the file"))
        return None
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # resolves `<<:` merge keys the way PyYAML would
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                out.problems.append((_mark(key_node), "a key must be plain text"))
                continue
            key = ctor.construct_object(key_node)
            if not isinstance(key, str):
                # `on:`, `123:` and dates are parsed by YAML as non-strings; keys are names here.
                key = str(key_node.value)
            if key in result:
                first = out.keys.get((*path, key), (0, 0))
                out.problems.append(
                    (
                        _mark(key_node),
                        f"duplicate key {key!r} (first at line {first[0]}) — "
                        "YAML keeps only the last one; remove one of them",
                    )
                )
            out.keys[(*path, key)] = _mark(key_node)
            result[key] = _build(value_node, (*path, key), out, ctor, depth=depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), out, ctor, depth=depth + 1)
            for i, item in enumerate(node.value)
        ]
    return ctor.construct_object(node)
