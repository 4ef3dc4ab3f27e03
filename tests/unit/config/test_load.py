"""The loader on real files: every mistake is a precise problem, and nothing else is lost."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignd.config.load import load_root, merge_last_good
from campaignd.config.values import Rate
from tests.rootfiles import make_root

REPO = Path(__file__).resolve().parents[3]
PROBLEM_RE = re.compile(r"^[^:]+:\d+:\d+: .+")


def messages(result: object) -> list[str]:
    return [str(p) for p in result.problems]  # type: ignore[attr-defined]


def test_example_root_is_valid() -> None:
    result = load_root(REPO, env={})
    assert result.errors == [], messages(result)
    cfg = result.config
    assert set(cfg.campaigns) == {"product-launch", "onboarding"}
    assert {"local-sink", "acme-relay"} <= set(cfg.services)
    assert cfg.campaigns["onboarding"].steps[1].after == timedelta(days=3)
    # the production relay's password is named, not written: a warning while it is unset
    assert any("ACME_SMTP_PASSWORD" in p.message for p in result.warnings)
    # html_file was read into the template
    assert "<html>" in (cfg.templates["launch-a"].html or "")


def test_minimal_root(tmp_path: Path) -> None:
    result = load_root(make_root(tmp_path), env={})
    assert result.ok, messages(result)
    assert result.config.services["sink"].effective_port == 2525


def test_malformed_yaml_points_at_the_line(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"services.d/sink.yaml": 'from: "x@y.z"\nhost: [unclosed\n'})
    result = load_root(root, env={})
    (p,) = [e for e in result.errors if e.file == "services.d/sink.yaml"]
    assert p.line >= 2
    assert "YAML syntax error" in p.message
    # the campaign that uses it now names the broken file, not "unknown service"
    assert any("service 'sink' has errors" in m for m in messages(result))


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {"services.d/sink.yaml": 'from: "a@b.c"\nhost: 127.0.0.1\nsecurity: none\nrats: 5/s\n'},
    )
    result = load_root(root, env={})
    (p, *_) = result.errors
    assert str(p).startswith("services.d/sink.yaml:4:1: unknown key 'rats'")
    assert "did you mean 'rate'?" in p.message


def test_nested_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/sink.yaml": """
                from: "a@b.c"
                security: none
                port: twenty-five
                retry: {backof: 5m}
            """
        },
    )
    result = load_root(root, env={})
    text = messages(result)
    assert any(
        m.startswith("services.d/sink.yaml:3:7: port: expected a whole number") for m in text
    )
    assert any("unknown key 'backof' in retry — did you mean 'backoff'?" in m for m in text)


def test_bad_values_name_the_syntax(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/sink.yaml": """
                from: "a@b.c"
                security: ssl
                rate: [5/s, 10/fortnight]
                timeout: soon
            """
        },
    )
    text = "\n".join(messages(load_root(root, env={})))
    assert "security: 'ssl' is not allowed — use one of 'starttls', 'tls' or 'none'" in text
    assert "rate[1]: '10/fortnight' is not a rate" in text or "rate: '10/fortnight'" in text
    assert "timeout: 'soon' is not a duration" in text


def test_missing_required_key(tmp_path: Path) -> None:
    root = make_root(
        tmp_path, {"campaigns.d/launch.yaml": "audience: lists/people.csv\ntemplate: hello\n"}
    )
    result = load_root(root, env={})
    assert any("missing required key 'services'" in m for m in messages(result))
    assert "launch" not in result.config.campaigns


def test_dangling_references_and_step_rules(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "campaigns.d/launch.yaml": """
                kind: transactional
                audience: lists/people.csv
                services: [sinc]
                steps:
                  - template: hello
                    after: 1d
                  - template: helo
            """
        },
    )
    text = messages(load_root(root, env={}))
    assert any("3:" in m and "unknown service 'sinc' — did you mean 'sink'?" in m for m in text)
    assert any("unknown template 'helo' — did you mean 'hello'?" in m for m in text)
    assert any("the first step has after:" in m for m in text)
    assert any("step 2 has no after:" in m for m in text)


def test_compliance_gate(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "templates.d/nolink.yaml": """
                subject: Hi
                text: "Unsubscribe: {{ unsubscribe_url }}"
                html: "<p>no link here</p>"
            """,
            "campaigns.d/launch.yaml": """
                kind: marketing
                audience: lists/people.csv
                services: sink
                template: nolink
            """,
        },
    )
    result = load_root(root, env={})
    text = messages(result)
    assert any("needs postal_address" in m for m in text)
    assert any("template 'nolink' has no {{ unsubscribe_url }} in its html part" in m for m in text)
    assert "launch" not in result.config.campaigns
    assert all(p.severity == "error" for p in result.problems if "unsubscribe" in p.message)


def test_legacy_placeholder_counts_for_the_gate(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "templates.d/hello.yaml": (
                'subject: Hi\ntext: "bye {$unsubscribe_url} {$postal_address}"\n'
            ),
            "campaigns.d/launch.yaml": """
                kind: marketing
                postal_address: 1 Main St
                audience: lists/people.csv
                services: sink
                template: hello
            """,
        },
    )
    assert load_root(root, env={}).ok


def test_ids_from_file_names(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/sink.yml": 'from: "a@b.c"\nsecurity: none\n',
            "services.d/Bad Name.yaml": 'from: "a@b.c"\n',
            "services.d/.sink.yaml.swp": "garbage: [",
            "services.d/sink.yaml~": "garbage: [",
            "services.d/notes.txt": "hello",
        },
    )
    result = load_root(root, env={})
    text = messages(result)
    assert any("duplicate service id 'sink'" in m for m in text)
    assert any("'Bad Name.yaml' is not a valid id" in m for m in text)
    assert not any(".swp" in m or "yaml~" in m for m in text)
    assert any("notes.txt" in m and "warning" in m for m in text)


def test_secrets(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/lit.yaml": 'from: "a@b.c"\nusername: u\npassword: hunter2\n',
            "services.d/env.yaml": 'from: "a@b.c"\nusername: u\npassword_env: RELAY_PW\n',
            "services.d/both.yaml": (
                'from: "a@b.c"\nusername: u\npassword_env: X\npassword_file: /etc/x\n'
            ),
            "services.d/nopw.yaml": 'from: "a@b.c"\nusername: u\n',
        },
    )
    result = load_root(root, env={})
    warnings = [str(p) for p in result.warnings]
    errors = [str(p) for p in result.errors]
    assert any(
        w.startswith("services.d/lit.yaml:3:1: warning: password is written in the file")
        for w in warnings
    )
    assert any("services.d/env.yaml:3:1" in w and "RELAY_PW is not set" in w for w in warnings)
    assert any("both.yaml" in e and "exactly one way" in e for e in errors)
    assert any("nopw.yaml" in e and "no password" in e for e in errors)
    # with the variable set the warning goes away
    again = load_root(root, env={"RELAY_PW": "s3cret"})
    assert not any("RELAY_PW" in str(p) for p in again.problems)


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"services.d/sink.yaml": 'from: "a@b.c"\nport: 25\nport: 26\n'})
    (p, *_) = load_root(root, env={}).errors
    assert p.line == 3 and "duplicate key 'port' (first at line 2)" in p.message


def test_template_body_files(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "templates.d/hello.yaml": (
                "subject: Hi\ntext_file: hello.txt.j2\nhtml_file: missing.html\n"
            ),
            "templates.d/hello.txt.j2": "Hi {{ first_name }} {{ unsubscribe_url }}",
        },
    )
    text = messages(load_root(root, env={}))
    assert any("html_file: missing.html does not exist" in m for m in text)


def test_huge_template_is_refused_with_a_size(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    root = make_root(
        tmp_path,
        {
            "templates.d/hello.yaml": "subject: Hi\nhtml_file: big.html\n",
            "templates.d/big.html": big,
        },
    )
    text = messages(load_root(root, env={}))
    assert any("is 10.5 MB — templates are capped at 1 MiB" in m for m in text)


def test_template_syntax_and_sandbox_escape(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "templates.d/hello.yaml": "subject: Hi\ntext: |\n  line one\n  {{ oops( }}\n",
            "templates.d/evil.yaml": "subject: \"{{ ''.__class__.__mro__ }}\"\ntext: hi\n",
        },
    )
    result = load_root(root, env={})
    text = messages(result)
    assert any(m.startswith("templates.d/hello.yaml:4:") for m in text), text
    assert any(m.startswith("templates.d/evil.yaml:1:") and "__class__" in m for m in text), text
    assert "evil" not in result.config.templates


def test_missing_audience_file(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"lists/people.csv": None})
    (tmp_path / "lists" / "people.csv").unlink(missing_ok=True)
    text = messages(load_root(root, env={}))
    assert any("audience file lists/people.csv does not exist" in m for m in text)


def test_one_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/other.yaml": 'from: "a@b.c"\nsecurity: none\n',
            "services.d/broken.yaml": "from: [",
        },
    )
    result = load_root(root, env={})
    assert set(result.config.services) == {"sink", "other"}
    assert "launch" in result.config.campaigns
    assert result.broken["service"] == {"broken"}


def test_last_good_version_stays_in_force(tmp_path: Path) -> None:
    root = make_root(
        tmp_path, {"services.d/sink.yaml": 'from: "a@b.c"\nsecurity: none\nrate: 5/s\n'}
    )
    first = load_root(root, env={})
    assert first.config.services["sink"].rate == (Rate(5, 1),)
    (root / "services.d/sink.yaml").write_text('from: "a@b.c"\nsecurity: none\nrate: 5/fortnight\n')
    second = load_root(root, env={}, generation=2)
    assert "sink" not in second.config.services
    merged = merge_last_good(first.config, second)
    assert merged.services["sink"].rate == (Rate(5, 1),)
    assert "launch" in merged.campaigns  # the campaign keeps running on the last good service
    (root / "services.d/sink.yaml").unlink()
    third = load_root(root, env={}, generation=3)
    assert "sink" not in merge_last_good(first.config, third).services  # deleted means gone


def test_settings_file(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "campaignd.yaml": """
                database: sqlite:///state/x.db
                http: {listen: "0.0.0.0:9000", token_env: MY_TOKEN}
                timezone: Mars/Olympus
            """
        },
    )
    result = load_root(root, env={})
    text = messages(result)
    assert any("timezone: 'Mars/Olympus' is not an IANA time zone" in m for m in text)
    assert result.settings_broken


def test_every_problem_has_the_format(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {"services.d/sink.yaml": "- a list\n", "campaigns.d/x.yaml": "", "campaignd.yaml": "[1"},
    )
    result = load_root(root, env={})
    assert len(result.problems) >= 3
    for p in result.problems:
        assert PROBLEM_RE.match(str(p)), str(p)


yaml_text = st.text(
    alphabet=st.sampled_from(list("abc:-[]{}'\"#&*!|>%@` \n\t0123456789.,?")), max_size=200
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(service=yaml_text, campaign=yaml_text, template=yaml_text)
def test_random_yaml_never_raises(
    tmp_path: Path, service: str, campaign: str, template: str
) -> None:
    root = make_root(
        tmp_path,
        {
            "services.d/sink.yaml": service,
            "campaigns.d/launch.yaml": campaign,
            "templates.d/hello.yaml": template,
        },
    )
    result = load_root(root, env={})
    for p in result.problems:
        assert PROBLEM_RE.match(str(p)), str(p)


@pytest.mark.parametrize(
    "value",
    ["{a: 1}", "[1, 2]", "42", "true", "null", "2026-01-01", "!!binary aGVsbG8=", "&a [*a]"],
)
def test_wrong_shapes_are_problems(tmp_path: Path, value: str) -> None:
    root = make_root(
        tmp_path, {"campaigns.d/launch.yaml": f"audience: {value}\nservices: {value}\n"}
    )
    result = load_root(root, env={})
    assert "launch" not in result.config.campaigns
    assert result.errors
