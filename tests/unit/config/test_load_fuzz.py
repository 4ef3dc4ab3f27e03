"""Mutated config roots through the loader's entry points — ``load_root`` (``campaignctl
validate`` and the daemon's reload), ``config_stamps`` (the reload's change check) and
``merge_last_good`` (what the reload then runs): no exception but the loader's own problems,
every call quick, and a broken file keeps its last good object.

Mutations: byte flips, truncation, hostile snippets spliced in (tags, aliases, odd scalars,
wrong types, non-UTF-8), whole-file replacements (alias and merge bombs, deep nesting, huge
scalars, multi-document files) and the file swapped for a FIFO, a symlink to /dev/zero or to a
FIFO, or a directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignd.config.load import LoadResult, config_stamps, load_root, merge_last_good
from tests.unit.config.test_files import within
from tests.unit.config.test_load_unsafe import billion_laughs

REPO = Path(__file__).resolve().parents[3]
PROBLEM_RE = re.compile(r"^[^\n]+:\d+:\d+: [^\n]+$")
KIND_DIRS = {"services.d": "service", "templates.d": "template", "campaigns.d": "campaign"}
TARGETS = sorted(
    [
        "campaignd.yaml",
        "lists/customers.csv",
        "templates.d/launch-a.html.j2",
        *(f"{d}/{p.name}" for d in KIND_DIRS for p in sorted((REPO / d).glob("*.yaml"))),
    ]
)
SNIPPETS = [
    b"!!python/object/apply:os.system ['true'] ",
    b"!!python/name:os.system ",
    b"!custom ",
    b"&a [*a]",
    b"*undefined ",
    b"<<: *nothing\n",
    b"2026-13-45",
    b"9" * 5000,
    b"!!int abc",
    b"!!timestamp soon",
    b"!!binary ???",
    b"{a: 1}",
    b"[1, [2, [3]]]",
    b"null",
    b"\x00",
    b"\xff\xfe\x80",
    b"\t",
    b'"',
    b"'",
    b": ",
    b"- ",
    b"\n---\n",
    b"[" * 70,
    b"x" * 10_000,
]
MERGE_BOMB = "\n".join(
    ["a0: &a0 {x: 1, y: 2}"]
    + [f"a{i}: &a{i} {{<<: [*a{i - 1}], k{i}: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 40)]
).encode()
WHOLE = [
    billion_laughs().encode(),
    MERGE_BOMB,
    b"x: &x 1\nl: [" + b", ".join([b"*x"] * 20_000) + b"]\n",
    b"a: " + b"[" * 55 + b"]" * 55 + b"\n",
    b"a: " + b"[" * 2000 + b"]" * 2000 + b"\n",
    b"a: '" + b"y" * (2 << 20) + b"'\n",
    b"a: " + b"9" * 5000 + b"\n",
    b"l:\n" + b"".join(b"- v%d\n" % i for i in range(120_000)),
    b"---\na: 1\n---\nb: 2\n",
    b"",
    b"\xef\xbb\xbf",
    "subject: \udcff".encode("utf-8", "surrogateescape"),
    b"!!python/object/new:os.system [true]\n",
    b"- 1\n- 2\n",
    b"just text",
]
SPECIAL = ["fifo", "dev-zero", "link-to-fifo", "directory", "link-loop"]


def make_base(root: Path) -> Path:
    for name in ("services.d", "templates.d", "campaigns.d", "lists"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "campaignd.yaml", root / "campaignd.yaml")
    return root


def apply(root: Path, rel: str, mutation: tuple[str, Any]) -> None:
    path = root / rel
    data = path.read_bytes()
    kind, arg = mutation
    if kind == "flip":
        buf = bytearray(data)
        for where, byte in arg:
            if buf:
                buf[int(where * (len(buf) - 1))] = byte
        path.write_bytes(bytes(buf))
    elif kind == "truncate":
        path.write_bytes(data[: int(arg * len(data))])
    elif kind == "splice":
        where, snippet = arg
        cut = int(where * len(data))
        path.write_bytes(data[:cut] + snippet + data[cut:])
    elif kind == "whole":
        path.write_bytes(arg)
    else:  # special files
        path.unlink()
        if arg == "fifo":
            os.mkfifo(path)
        elif arg == "dev-zero":
            path.symlink_to("/dev/zero")
        elif arg == "link-to-fifo":
            os.mkfifo(root / "elsewhere")
            path.symlink_to(root / "elsewhere")
        elif arg == "directory":
            path.mkdir()
        else:
            path.symlink_to(path)


def release_fifos(root: Path) -> None:
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_fifo():
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def check(root: Path, rel: str, mutation: tuple[str, Any]) -> LoadResult:
    previous = load_root(root, env={}).config
    assert previous.campaigns, "the base root loads"
    apply(root, rel, mutation)
    try:
        within(5, lambda: config_stamps(root, previous))
        started = time.monotonic()
        result = within(5, lambda: load_root(root, env={}))
        elapsed = time.monotonic() - started
    finally:
        release_fifos(root)
    assert elapsed < 2.5, f"load_root took {elapsed:.1f} s"
    for p in result.problems:
        assert PROBLEM_RE.match(str(p)), repr(str(p))
        assert "Traceback" not in p.message
    merged = merge_last_good(previous, result)
    folder, _, name = rel.partition("/")
    if folder in KIND_DIRS and name.endswith(".yaml") and mutation != ("special", "directory"):
        kind, oid = KIND_DIRS[folder], name.removesuffix(".yaml")
        objects = getattr(merged, f"{kind}s")
        assert oid in objects, "a broken file keeps its last good version in force"
        if oid in result.broken[kind]:
            assert objects[oid] == getattr(previous, f"{kind}s")[oid]
    if rel == "campaignd.yaml" and result.settings_broken:
        assert merged.settings == previous.settings
    return result


MUTATIONS = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6),
    ),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("splice"), st.tuples(st.floats(0, 1), st.sampled_from(SNIPPETS))),
    st.tuples(st.just("whole"), st.sampled_from(WHOLE)),
    st.tuples(st.just("special"), st.sampled_from(SPECIAL)),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rel=st.sampled_from(TARGETS), mutation=MUTATIONS)
def test_any_mutation_is_a_problem_never_an_exception(
    tmp_path_factory: pytest.TempPathFactory, rel: str, mutation: tuple[str, Any]
) -> None:
    check(make_base(tmp_path_factory.mktemp("fuzz")), rel, mutation)


HOSTILE = [("whole", w) for w in WHOLE[:9] + WHOLE[12:13]] + [
    ("special", s) for s in SPECIAL if s != "directory"
]


@pytest.mark.parametrize("mutation", HOSTILE, ids=lambda m: f"{m[0]}-{str(m[1])[:12]}")
@pytest.mark.parametrize("rel", ["campaignd.yaml", "services.d/local-sink.yaml"])
def test_every_hostile_file_is_named_in_an_error(
    tmp_path: Path, rel: str, mutation: tuple[str, Any]
) -> None:
    result = check(make_base(tmp_path), rel, mutation)
    assert any(p.file == rel for p in result.errors), [str(p) for p in result.problems]
