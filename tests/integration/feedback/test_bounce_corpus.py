"""flufl.bounce's corpus of real bounces, through campaignd's recogniser and suppression rule.

The corpus is flufl.bounce's own test data: ``tests/data/*.txt`` (117 real bounce mails from
two decades of Mailman) and ``tests/test_detectors.py``, whose ``DETECTORS`` table names the
addresses each sample reports and whether flufl counts them as temporary. It ships in
flufl.bounce's source distribution, which is fetched from the package index at test time
(the installed version, cached under pytest's cache directory) and never copied into this
repository. A failed download fails the test.

Definitions (a "pair" is sample × address × kind, addresses compared case-insensitively; kind
is ``bounced`` for an address flufl counts as a permanent failure, ``deferred_bounce`` for a
temporary one):

- **expected pairs**: for each sample, the addresses its ``DETECTORS`` rows list. Rows listing
  no address test that *one detector* ignores the mail, so a sample with only such rows (and
  the two samples without any row) takes its expectation from flufl.bounce's full scan of the
  sample (``all_failures``), which for 6.0.0 is empty except for simple_42 — a DSN whose only
  row says SimpleMatch finds nothing in it.
- **reported pairs**: the ``bounced`` and ``deferred_bounce`` events with a recipient that
  ``feedback.recognize`` returns for the sample.
- **recall** = |expected ∩ reported| / |expected|: an address flufl expects is found and
  classified the same way (permanent vs temporary).
- **precision** = |expected ∩ reported| / |reported|: what campaignd reports is what flufl
  expects.
- **dead**: a sample whose text says the mailbox or its domain does not exist, or the account
  is discontinued/abandoned (``DEAD``, judged by reading every sample); each of its permanent
  addresses must come out as an event that ``events.suppresses_address`` suppresses.

Measured on flufl.bounce 6.0.0 (117 samples, 134 expected pairs): before the shared table
(commit 1595176) recall 0.963 (129/134), precision 0.992 (129/130), 11 dead samples (12
addresses) not suppressed; now recall 0.993 (133/134), precision 0.993 (133/134), none. The one
disagreement is dsn_02: ``Action: failed`` with ``Status: 4.4.7`` (queue lifetime over) is a
temporary status, recorded only (SPEC §7), where flufl counts it permanent.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from importlib.metadata import version
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from campaignd.feedback import FeedbackEvent, recognize
from campaignd.feedback.apply import suppresses_address

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
Pair = tuple[str, str, str]  # sample, address (lowercase), kind

# Judged by reading each sample: the mailbox or domain does not exist, or the account is gone
# (Yahoo's "disabled or discontinued", demon.net's "not collected after 30 days").
DEAD = frozenset(
    [
        "bounce_03",
        "dsn_10",
        "dsn_11",
        "dsn_12",
        "dsn_13",
        "dsn_14",
        "dsn_15",
        "dsn_16",
        "dsn_18",
        "exim_01",
        "groupwise_01",
        "groupwise_02",
        "llnl_01",
        "microsoft_01",
        "microsoft_02",
        "microsoft_04",
        "postfix_01",
        "qmail_03",
        "qmail_04",
        "qmail_05",
        "simple_04",
        "simple_05",
        "simple_06",
        "simple_08",
        "simple_11",
        "simple_12",
        "simple_13",
        "simple_15",
        "simple_19",
        "simple_23",
        "simple_25",
        "simple_26",
        "simple_27",
        "simple_29",
        "simple_30",
        "simple_33",
        "simple_34",
        "simple_36",
        "simple_37",
        "simple_39",
        "smtp32_04",
        "smtp32_06",
        "smtp32_07",
        "yahoo_03",
        "yahoo_05",
        "yahoo_06",
        "yahoo_07",
        "yahoo_08",
        "yahoo_09",
        "yahoo_10",
        "yahoo_11",
        "yahoo_13",
        "yale_01",
    ]
)
# Permanent failures that are not about the address: full mailboxes and quotas, size, relay
# and sender policy, loops, unreachable or broken servers, a queue that timed out.
KEEP = frozenset(
    [
        "aol_01",
        "dsn_01",
        "dsn_02",
        "dsn_03",
        "dsn_04",
        "dsn_09",
        "hotpop_01",
        "netscape_01",
        "newmailru_01",
        "postfix_02",
        "postfix_03",
        "postfix_04",
        "postfix_05",
        "qmail_02",
        "qmail_06",
        "qmail_07",
        "sendmail_01",
        "simple_01",
        "simple_07",
        "simple_09",
        "simple_14",
        "simple_18",
        "simple_38",
        "simple_42",
        "simple_44",
        "simple_45",
        "yahoo_01",
        "yahoo_02",
        "yahoo_04",
    ]
)
# "Could not be delivered" and nothing more, or RFC 5321's stock "mailbox unavailable".
NO_REASON = frozenset(
    [
        "bounce_02",
        "caiwireless_01",
        "microsoft_03",
        "qmail_01",
        "simple_02",
        "simple_10",
        "simple_16",
        "simple_17",
        "simple_20",
        "simple_24",
        "simple_31",
        "simple_32",
        "simple_41",
        "sina_01",
        "smtp32_01",
        "smtp32_02",
        "smtp32_03",
        "smtp32_05",
        "yahoo_12",
    ]
)
# KEEP samples that are suppressed all the same: their prose bounce carries no status code
# and ``events.suppresses_address`` suppresses such a final failure unless its detail reads
# like a refusal. Fixing that is a change to events.py's no-status rule (outside this suite);
# the set may only shrink.
KNOWN_OVER_SUPPRESSED = frozenset(
    [
        "aol_01",
        "dsn_03",
        "netscape_01",
        "newmailru_01",
        "postfix_02",
        "postfix_03",
        "postfix_04",
        "postfix_05",
        "qmail_02",
        "qmail_07",
        "sendmail_01",
        "simple_18",
        "simple_44",
        "yahoo_01",
    ]
)


@dataclass(frozen=True)
class Corpus:
    samples: dict[str, bytes]  # sample name (file stem) → raw mail
    expected: frozenset[Pair]

    def run(self, name: str) -> list[FeedbackEvent]:
        return recognize(self.samples[name], source="corpus", now=NOW, verp=None)


def _sdist(cache_dir: Path) -> Path:
    """flufl.bounce's sdist for the installed version, downloaded once into ``cache_dir``."""
    wanted = version("flufl.bounce")
    for candidate in sorted(cache_dir.glob(f"flufl[._]bounce-{wanted}.tar.gz")):
        if tarfile.is_tarfile(candidate):
            return candidate
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", f"flufl.bounce=={wanted}", "-d", str(cache_dir),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not download flufl.bounce {wanted}'s sdist: {exc}", pytrace=False)
    found = sorted(cache_dir.glob(f"flufl[._]bounce-{wanted}.tar.gz"))
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        pytest.fail(
            f"could not download flufl.bounce {wanted}'s sdist (the bounce corpus) with "
            f"{' '.join(command)}: exit {done.returncode}\n{tail}",
            pytrace=False,
        )
    return found[0]


def _detectors_table(source: str) -> list[tuple[str, str, list[bytes], bool]]:
    """``DETECTORS`` from flufl's test_detectors.py, read as a literal (nothing executed)."""
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "DETECTORS"
        ):
            table: list[tuple[str, str, list[bytes], bool]] = ast.literal_eval(node.value)
            return table
    pytest.fail("flufl.bounce's tests/test_detectors.py has no DETECTORS table any more")


@pytest.fixture(scope="session")
def corpus(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    # pytest's cache keeps the sdist between runs; without the cache plugin, a fresh download.
    cache = getattr(pytestconfig, "cache", None)
    where = cache.mkdir("flufl-bounce-sdist") if cache else tmp_path_factory.mktemp("sdist")
    path = _sdist(where)
    samples: dict[str, bytes] = {}
    table_source = None
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2:
                continue
            inner = "/".join(parts[1:])
            data = tar.extractfile(member)
            if data is None:
                continue
            if inner.startswith("tests/data/") and inner.endswith(".txt"):
                samples[Path(inner).stem] = data.read()
            elif inner == "tests/test_detectors.py":
                table_source = data.read().decode()
    if table_source is None or not samples:
        pytest.fail(f"{path.name} holds no tests/data samples or no tests/test_detectors.py")
    listed: dict[str, set[tuple[str, str]]] = {}
    for _, filename, addresses, temporary in _detectors_table(table_source):
        kind = "deferred_bounce" if temporary else "bounced"
        listed.setdefault(Path(filename).stem, set()).update(
            (a.decode().lower(), kind) for a in addresses
        )
    expected: set[Pair] = set()
    for name, raw in samples.items():
        pairs = listed.get(name, set())
        if not pairs:  # only "this detector finds nothing" rows, or none: flufl's full scan
            temporary, permanent = all_failures(message_from_bytes(raw))
            pairs = {(a.decode().lower(), "deferred_bounce") for a in temporary} | {
                (a.decode().lower(), "bounced") for a in permanent
            }
        expected.update((name, address, kind) for address, kind in pairs)
    return Corpus(samples, frozenset(expected))


def _reported(corpus: Corpus) -> dict[Pair, FeedbackEvent]:
    found: dict[Pair, FeedbackEvent] = {}
    for name in sorted(corpus.samples):
        for event in corpus.run(name):
            if event.kind in ("bounced", "deferred_bounce") and event.recipient:
                found[(name, event.recipient.lower(), event.kind)] = event
    return found


def test_the_corpus_is_the_one_judged_here(corpus: Corpus) -> None:
    # A new flufl.bounce with other samples must be read and judged before it is measured.
    assert len(corpus.samples) == 117
    permanent = {name for name, _, kind in corpus.expected if kind == "bounced"}
    assert permanent == DEAD | KEEP | NO_REASON
    assert not (DEAD & KEEP or DEAD & NO_REASON or KEEP & NO_REASON)
    assert KNOWN_OVER_SUPPRESSED <= KEEP


def test_recall_and_precision(corpus: Corpus) -> None:
    reported = _reported(corpus)
    hits = corpus.expected & reported.keys()
    recall = len(hits) / len(corpus.expected)
    precision = len(hits) / len(reported)
    missed = sorted(corpus.expected - hits)
    extra = sorted(reported.keys() - hits)
    print(f"recall {recall:.3f} ({len(hits)}/{len(corpus.expected)}), "
          f"precision {precision:.3f} ({len(hits)}/{len(reported)})")  # fmt: skip
    assert recall >= 0.99, f"recall {recall:.3f}; missed {missed}"
    assert precision >= 0.99, f"precision {precision:.3f}; not expected {extra}"


def test_every_dead_address_is_suppressed(corpus: Corpus) -> None:
    reported = _reported(corpus)
    dead = sorted(p for p in corpus.expected if p[0] in DEAD and p[2] == "bounced")
    assert len(dead) >= len(DEAD)
    kept = [
        (p, reported[p].status, reported[p].detail[:120]) if p in reported else (p, "missed")
        for p in dead
        if p not in reported or not suppresses_address(reported[p])
    ]
    assert kept == []


def test_full_mailboxes_and_blocks_keep_the_address(corpus: Corpus) -> None:
    reported = _reported(corpus)
    suppressed = {
        name
        for (name, _, _), event in reported.items()
        if name in KEEP and suppresses_address(event)
    }
    assert suppressed <= KNOWN_OVER_SUPPRESSED, sorted(suppressed - KNOWN_OVER_SUPPRESSED)
