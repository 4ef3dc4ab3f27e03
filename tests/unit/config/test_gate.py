"""The daemon is the gate: what validate refuses is never run, and a campaign a reload broke
keeps running with the templates it was good with — never with the new, broken one."""

from __future__ import annotations

from pathlib import Path

from campaignd.config.load import kept_campaigns, load_root, merge_last_good
from campaignd.ctl.deliverability import lint_campaign
from tests.rootfiles import make_root

GOOD = """
    subject: Hi
    text: |
      Hi {{ first_name }}. {{ postal_address }}
      Unsubscribe: {{ unsubscribe_url }}
"""
NO_LINK = """
    subject: Hi
    text: |
      Hi {{ first_name }}. {{ postal_address }}
"""
NO_ADDRESS = """
    subject: Hi
    text: |
      Hi {{ first_name }}. Unsubscribe: {{ unsubscribe_url }}
"""
MARKETING = """
    kind: marketing
    postal_address: "Acme Inc, 1 Main St"
    audience: [lists/people.csv]
    services: [sink]
    template: hello
"""
RECEIPTS = """
    kind: transactional
    audience: [lists/people.csv]
    services: [sink]
    template: hello
"""


def root_with(tmp_path: Path, template: str, **extra: str | None) -> Path:
    files: dict[str, str | bytes | None] = {
        "templates.d/hello.yaml": template,
        "campaigns.d/launch.yaml": MARKETING,
    }
    files.update({f"campaigns.d/{k}.yaml": v for k, v in extra.items()})
    return make_root(tmp_path, files)


def test_a_template_without_the_postal_address_is_refused_with_file_and_line(
    tmp_path: Path,
) -> None:
    result = load_root(root_with(tmp_path, NO_ADDRESS), env={})
    assert "launch" not in result.config.campaigns
    (p,) = [p for p in result.errors if "postal address" in p.message]
    assert (p.file, p.line) == ("campaigns.d/launch.yaml", 5)
    assert "template 'hello' does not show the postal address" in p.message
    # lint still explains the refused campaign, with its usual findings
    findings = lint_campaign(result, "launch")
    assert [f.level for f in findings if f.topic == "postal-address"] == ["error"]


def test_the_address_spelled_out_counts(tmp_path: Path) -> None:
    spelled = NO_ADDRESS.replace("Hi {{ first_name }}.", "Acme Inc,\n      1 Main St.")
    assert load_root(root_with(tmp_path, spelled), env={}).ok


def test_a_reload_that_breaks_compliance_keeps_the_last_good_pair(tmp_path: Path) -> None:
    root = root_with(tmp_path, GOOD, receipts=RECEIPTS)
    first = load_root(root, env={})
    assert first.ok, first.problems
    good = first.config.templates["hello"]

    for broken in (NO_LINK, NO_ADDRESS):
        root_with(tmp_path, broken, receipts=RECEIPTS)
        result = load_root(root, env={})
        config = merge_last_good(first.config, result)
        assert config.campaigns["launch"] == first.config.campaigns["launch"]
        # the marketing campaign sends the template it was checked with …
        assert config.template_of("launch", "hello") == good
        # … while a transactional user of the same template gets the new one
        assert config.template_of("receipts", "hello") != good
        assert config.templates["hello"] != good
        (note,) = kept_campaigns(first.config, result)
        assert note.file == "campaigns.d/launch.yaml" and note.line == 5
        assert "last good version" in note.message

        # a second broken reload carries the pin forward
        again = merge_last_good(config, load_root(root, env={}))
        assert again.template_of("launch", "hello") == good

    # fixed: the pin is gone and the new template is used
    fixed = GOOD.replace("Hi {{ first_name }}", "Hello {{ first_name }}")
    root_with(tmp_path, fixed, receipts=RECEIPTS)
    config = merge_last_good(again, load_root(root, env={}))
    assert config.pinned == {}
    assert "Hello" in (config.template_of("launch", "hello").text or "")  # type: ignore[union-attr]


def test_without_a_last_good_version_the_campaign_is_not_run(tmp_path: Path) -> None:
    result = load_root(root_with(tmp_path, NO_LINK), env={})
    assert "launch" not in merge_last_good(None, result).campaigns
    assert "launch" in result.broken["campaign"]


def test_unknown_filters_and_tests_are_load_problems_with_lines(tmp_path: Path) -> None:
    template = """
        subject: Hi
        text: |
          Hi {{ first_name }}
          {{ first_name | shout }}
          {% if first_name is loud %}!{% endif %}
          {{ postal_address }} {{ unsubscribe_url }}
    """
    result = load_root(root_with(tmp_path, template), env={})
    found = {p.line: p.message for p in result.errors if p.file == "templates.d/hello.yaml"}
    assert "unknown filter |shout" in found[4], found
    assert "unknown test 'is loud'" in found[5], found
    assert "hello" in result.broken["template"]


def test_obvious_render_bombs_are_refused_at_load(tmp_path: Path) -> None:
    bombs = [
        "{{ lipsum(1000000) }}",
        "{% for i in range(10**10) %}x{% endfor %}",
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "{{ 'ab' * 10**9 }}",
        "{{ first_name | center(10**9) }}",
    ]
    for n, bomb in enumerate(bombs):
        root = make_root(
            tmp_path / str(n),
            {"templates.d/hello.yaml": f'subject: Hi\ntext: "{bomb} {{{{ unsubscribe_url }}}}"\n'},
        )
        result = load_root(root, env={})
        assert any("per-message budget" in p.message for p in result.errors), (
            bomb,
            result.problems,
        )


def test_validate_reports_an_unknown_filter_without_a_traceback(
    tmp_path: Path, capsys: object
) -> None:
    from campaignd.ctl.main import main

    template = 'subject: "{{ first_name | nosuch }}"\ntext: "{{ unsubscribe_url }}"\n'
    root = make_root(tmp_path, {"templates.d/hello.yaml": template})
    assert main(["validate", str(root)]) == 1
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert "templates.d/hello.yaml:1:" in captured.err
    assert "unknown filter |nosuch" in captured.err
    assert "Traceback" not in captured.err + captured.out
