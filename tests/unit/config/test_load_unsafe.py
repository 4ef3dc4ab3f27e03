"""load_root on hostile config roots: odd files, alias bombs, tags, absurd names — every one
is a problem with its file and line, found quickly, and never a traceback or a hang."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaignd.config.load import LoadResult, load_root
from tests.rootfiles import make_root
from tests.unit.config.test_files import within


def load(root: Path) -> LoadResult:
    return within(10, lambda: load_root(root, env={}))


def errors(result: LoadResult) -> list[str]:
    return [str(p) for p in result.errors]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    made = make_root(tmp_path)
    yield made
    for path in made.rglob("*"):  # release anything that might have blocked on a FIFO
        if path.is_fifo():
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize(
    "rel",
    ["services.d/sink.yaml", "templates.d/hello.yaml", "campaigns.d/launch.yaml", "campaignd.yaml"],
)
def test_a_fifo_in_place_of_a_config_file(root: Path, rel: str) -> None:
    path = root / rel
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    result = load(root)
    assert f"{rel}:1:1: is a FIFO, not a regular file — config files must be plain files" in (
        errors(result)
    )
    if rel == "campaignd.yaml":
        assert result.settings_broken
    else:
        assert Path(rel).stem not in result.config.campaigns | result.config.services


def test_a_symlink_to_dev_zero_as_a_template_body(root: Path) -> None:
    (root / "templates.d/hello.yaml").write_text(
        "subject: Hi\ntext: 'Unsubscribe: {{ unsubscribe_url }}'\nhtml_file: body.html\n"
    )
    (root / "templates.d/body.html").symlink_to("/dev/zero")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = load(root)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert (
        "templates.d/hello.yaml:3:12: html_file: body.html is a symlink to a character device "
        "(/dev/zero), not a regular file — a template body must be a plain file"
    ) in errors(result)
    assert "hello" not in result.config.templates
    assert grown_mb < 50


def test_a_symlink_to_a_fifo_among_the_services(root: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "elsewhere")
    (root / "services.d/other.yaml").symlink_to(tmp_path / "elsewhere")
    result = load(root)
    (problem,) = [e for e in errors(result) if e.startswith("services.d/other.yaml")]
    assert "is a symlink to a FIFO" in problem
    assert "sink" in result.config.services  # the others still load


def test_a_socket_in_campaigns(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root / "campaigns.d")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock.yaml")
        result = load(root)
    assert any(
        e.startswith("campaigns.d/sock.yaml:1:1: is a socket, not a regular file")
        for e in errors(result)
    )
    assert "launch" in result.config.campaigns


def test_a_fifo_or_directory_as_an_audience_list(root: Path) -> None:
    (root / "lists/people.csv").unlink()
    os.mkfifo(root / "lists/people.csv")
    result = load(root)
    assert (
        "campaigns.d/launch.yaml:3:11: audience file lists/people.csv is a FIFO, not a regular "
        "file — an audience list must be a plain CSV or text file"
    ) in errors(result)
    assert "launch" in result.broken["campaign"]
    assert "launch" not in result.config.campaigns


def test_a_fifo_as_a_secret_file_is_a_warning_not_a_hang(root: Path) -> None:
    os.mkfifo(root / "pw")
    (root / "services.d/relay.yaml").write_text(
        f'from: "a@b.c"\nhost: relay.example\nusername: u\npassword_file: {root / "pw"}\n'
    )
    result = load(root)
    (warning,) = [str(p) for p in result.warnings if "relay.yaml" in p.file]
    assert f"cannot read {root / 'pw'}: is a FIFO, not a regular file" in warning


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 300 + ".csv", "cannot use it: File name too long"),
        ("/".join(["d" * 200] * 30), "cannot use it: File name too long"),
        ('"lists/a\\0b.csv"', "the path contains a NUL byte"),
    ],
)
def test_absurd_audience_paths_are_problems(root: Path, name: str, why: str) -> None:
    (root / "campaigns.d/launch.yaml").write_text(
        f"name: L\nkind: transactional\naudience: {name}\nservices: [sink]\ntemplate: hello\n"
    )
    result = load(root)
    (problem,) = errors(result)
    assert problem.startswith("campaigns.d/launch.yaml:3:11: audience file ")
    assert problem.endswith(why)
    assert len(problem) < 300  # the name is shortened, not printed whole


def test_an_overlong_or_nul_template_body_name(root: Path) -> None:
    (root / "templates.d/hello.yaml").write_text(
        f'subject: Hi\ntext_file: {"b" * 400}.txt\nhtml_file: "x\\0y"\n'
    )
    got = errors(load(root))
    assert any(
        e.startswith("templates.d/hello.yaml:2:12: text_file: cannot read bbbb")
        and e.endswith("… (404 characters): File name too long")
        for e in got
    )
    assert (
        "templates.d/hello.yaml:3:12: html_file: cannot read 'x\\x00y': embedded null byte" in got
    )


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_340_byte_billion_laughs_is_refused_in_milliseconds(root: Path) -> None:
    bomb = billion_laughs()
    assert len(bomb) < 350
    (root / "campaigns.d/launch.yaml").write_text(bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = load(root)
    elapsed = time.monotonic() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    (problem,) = [e for e in errors(result) if "launch.yaml" in e]
    assert problem.startswith("campaigns.d/launch.yaml:6:4: YAML error: this value expands to ")
    assert elapsed < 0.5 and grown_mb < 20


def test_merge_key_bombs_and_alias_loops(root: Path) -> None:
    merges = ["a0: &a0 {x: 1, y: 2}"] + [
        f"a{i}: &a{i} {{<<: [*a{i - 1}], k{i}: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 40)
    ]
    (root / "services.d/merge.yaml").write_text("\n".join(merges))
    (root / "services.d/loop.yaml").write_text("from: &a [*a]\n")
    many = "x: &x 1\nl: [" + ", ".join(["*x"] * 10_001) + "]\n"
    (root / "services.d/many.yaml").write_text(many)
    got = errors(within(2, lambda: load_root(root, env={})))
    assert any(e.startswith("services.d/merge.yaml:") and "expands to more" in e for e in got)
    assert "services.d/loop.yaml:1:7: YAML error: an alias refers to a value that contains it " in (
        "\n".join(got)
    )
    # an alias is the node it names: the position is the anchor's
    assert "services.d/many.yaml:1:4: YAML error: more than 10,000 uses of aliases" in "\n".join(
        got
    )


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("host: !!python/object/apply:os.system ['true']\n", 1, "the tag !!python/object/apply"),
        ("port: 1\nhost: !!python/name:os.system\n", 2, "tag !!python/name:os.system is refused"),
        ("host: !!python/object:os.stat_result {a: 1}\n", 1, "!!python/object:os.stat_result"),
        ("host: !custom {a: 1}\n", 1, "unknown tag !custom"),
        ("host: x\nstart: 2026-13-45\n", 2, "'2026-13-45' is not a valid date"),
        ("port: !!int abc\n", 1, "'abc' is not a valid whole number"),
        ("port: !!timestamp soon\n", 1, "'soon' is not a valid date"),
        ("port: " + "9" * 5000 + "\n", 1, "is not a valid whole number"),
    ],
)
def test_tags_and_unconstructible_values(root: Path, text: str, line: int, expected: str) -> None:
    (root / "services.d/sink.yaml").write_text(text)
    (problem,) = [e for e in errors(load(root)) if e.startswith("services.d/sink.yaml")]
    assert problem.startswith(f"services.d/sink.yaml:{line}:")
    assert expected in problem


def test_the_depth_limit_still_holds(root: Path) -> None:
    (root / "services.d/sink.yaml").write_text("a: " + "[" * 60 + "]" * 60 + "\n")
    (problem,) = [e for e in errors(load(root)) if e.startswith("services.d/sink.yaml")]
    assert "nesting is deeper than 50 levels" in problem


def test_a_config_file_over_the_cap_read_from_procfs_like_sizes(root: Path) -> None:
    (root / "templates.d/hello.yaml").write_text("subject: Hi\ntext: '" + "x" * (1 << 20) + "'\n")
    (problem,) = [e for e in errors(load(root)) if e.startswith("templates.d/hello.yaml")]
    assert "file is 1.0 MB — config files are capped at 1 MiB" in problem
