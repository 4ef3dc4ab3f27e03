"""Build throwaway config roots for tests: a minimal valid root, then override files."""

from __future__ import annotations

import textwrap
from pathlib import Path

MINIMAL: dict[str, str] = {
    "services.d/sink.yaml": """
        from: "Acme <outreach@acme.example>"
        host: 127.0.0.1
        port: 2525
        security: none
    """,
    "templates.d/hello.yaml": """
        subject: "Hello {{ first_name }}"
        text: |
          Hi {{ first_name }},
          bye.
          Unsubscribe: {{ unsubscribe_url }}
    """,
    "campaigns.d/launch.yaml": """
        name: Launch
        kind: transactional
        audience: [lists/people.csv]
        services: [sink]
        template: hello
    """,
    "lists/people.csv": """
        email,first_name
        ann@example.com,Ann
        bob@example.org,Bob
    """,
}


def make_root(tmp: Path, files: dict[str, str | bytes | None] | None = None) -> Path:
    """MINIMAL plus ``files`` (a None value deletes a file of MINIMAL)."""
    merged: dict[str, str | bytes | None] = {**MINIMAL, **(files or {})}
    for rel, content in merged.items():
        if content is None:
            continue
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return tmp
