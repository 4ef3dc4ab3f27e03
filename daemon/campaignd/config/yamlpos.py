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


MAX_DEPTH = 50
"""Nesting deeper than this is refused: nothing legitimate is this deep."""
MAX_NODES = 100_000
"""Values in a document once every alias is expanded. A 1 MiB file of plain YAML holds fewer
useful values than this; a "billion laughs" of nine lines of aliases holds 10^9."""
MAX_ALIASES = 10_000
"""Alias uses (``*name``) in one document: shared defaults need a handful."""
_STANDARD_TAG = "tag:yaml.org,2002:"
_SAFE_TAGS = frozenset(
    _STANDARD_TAG + t
    for t in (
        "str", "int", "float", "bool", "null", "timestamp", "binary", "merge", "value",
        "map", "seq", "omap", "pairs", "set",
    )
)  # fmt: skip


def parse_yaml(text: str) -> Located:
    """Parse one YAML document; raise ``YamlSyntaxError`` with a position if it is malformed,
    uses a tag other than plain YAML's, or expands (through aliases) past ``MAX_NODES``."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or str(exc)
        if exc.context:
            what = f"{what} ({exc.context})"
        raise YamlSyntaxError(pos, f"YAML syntax error: {' '.join(what.split())}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: NUL, most controls
        at = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, at) + 1
        col = at - (text.rfind("\n", 0, at) + 1) + 1
        char = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or " ")
        )
        raise YamlSyntaxError(
            (line, col),
            f"YAML error: the character U+{char:04X} is not allowed in YAML — remove it "
            "(control characters other than tab and newline)",
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError((1, 1), f"YAML error: {' '.join(str(exc).split())}") from None
    except RecursionError:  # only the pure-Python fallback recurses; libyaml stops at 1000
        raise YamlSyntaxError((1, 1), "YAML error: nesting is far too deep") from None
    finally:
        loader.dispose()
    out = Located(data=None)
    if node is None:
        return out
    # Before anything is expanded: the composed graph shares aliased nodes, so this walk is
    # linear in the file while building the data is linear in the expanded size.
    _check_graph(node)
    constructor = yaml.SafeLoader("")
    try:
        out.data = _build(node, (), out, constructor, depth=0)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown !tag: reported like a syntax error
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(pos, f"YAML error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError((1, 1), f"YAML error: {' '.join(str(exc).split())}") from None
    return out


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _tag_problem(node: yaml.Node) -> str | None:
    tag = node.tag or ""
    if tag in _SAFE_TAGS or tag == "!" or not tag:
        return None
    shown = "!!" + tag.removeprefix(_STANDARD_TAG) if tag.startswith(_STANDARD_TAG) else tag
    if tag.startswith(_STANDARD_TAG + "python/"):
        return (
            f"the tag {shown} is refused — campaignd reads plain YAML (safe loading) and never "
            "builds Python objects from a file; remove the tag"
        )
    return f"unknown tag {shown} — campaignd reads plain YAML; remove the tag"


def _check_graph(root: yaml.Node) -> None:
    """Refuse unsafe tags, self-referencing aliases and documents too big once expanded.

    An iterative post-order walk (aliases can chain deeper than Python's stack) that computes
    each distinct node's expanded size once; scalars, the bulk of any file, are settled inline.
    """
    size: dict[int, int] = {}
    entered: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def alias(node: yaml.Node) -> None:
        nonlocal aliases
        aliases += 1
        if aliases > MAX_ALIASES:
            raise YamlSyntaxError(
                _mark(node),
                f"YAML error: more than {MAX_ALIASES:,} uses of aliases (*name) — "
                "write the values out instead",
            )

    def tags(node: yaml.Node) -> None:
        if node.tag not in _SAFE_TAGS and (why := _tag_problem(node)) is not None:
            raise YamlSyntaxError(_mark(node), f"YAML error: {why}")

    if isinstance(root, yaml.ScalarNode):
        tags(root)
        return
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        children = _children(node)
        if leaving:
            total = 1 + sum(size[id(c)] for c in children)
            size[key] = total
            if total > MAX_NODES:
                raise YamlSyntaxError(
                    _mark(node),
                    f"YAML error: this value expands to more than {MAX_NODES:,} values "
                    "(aliases repeating aliases, or a list far too long) — write it out plainly",
                )
            continue
        if key in size:  # reached a second time: an alias to a finished collection
            alias(node)
            continue
        if key in entered:
            raise YamlSyntaxError(
                _mark(node), "YAML error: an alias refers to a value that contains it (a loop)"
            )
        tags(node)
        entered.add(key)
        stack.append((node, True))
        for child in reversed(children):
            if isinstance(child, yaml.ScalarNode):
                ckey = id(child)
                if ckey in size:
                    alias(child)
                else:
                    tags(child)
                    size[ckey] = 1
            else:
                stack.append((child, False))


_KINDS = {"int": "whole number", "float": "number", "bool": "true/false", "timestamp": "date"}


def _construct(ctor: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return ctor.construct_object(node)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
        # PyYAML's own constructors fail this way on `2026-13-45`, `!!int abc`, a 5000-digit
        # number: a value the operator wrote, so a problem at its place, not a traceback.
        text = str(node.value)
        shown = repr(text if len(text) <= 40 else text[:40] + "…")
        tag = str(node.tag).removeprefix(_STANDARD_TAG)
        kind = _KINDS.get(tag, tag)
        why = f" ({exc})" if isinstance(exc, ValueError) and len(str(exc)) < 80 else ""
        raise YamlSyntaxError(
            _mark(node),
            f"YAML error: {shown} is not a valid {kind}{why} — quote it to keep it as text",
        ) from None


def _build(node: yaml.Node, path: Path_, out: Located, ctor: yaml.SafeLoader, *, depth: int) -> Any:
    out.values[path] = _mark(node)
    if depth > MAX_DEPTH:
        out.problems.append(
            (_mark(node), f"nesting is deeper than {MAX_DEPTH} levels — flatten the file")
        )
        return None
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # resolves `<<:` merge keys the way PyYAML would
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                out.problems.append((_mark(key_node), "a key must be plain text"))
                continue
            key = _construct(ctor, key_node)
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
    return _construct(ctor, node)
