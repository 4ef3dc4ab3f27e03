"""Open and click tracking: links in the HTML part rewritten to signed redirects, and the pixel."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True)
class Tracking:
    """Open / click tracking of one message's HTML part (SPEC §3 ``track``).

    ``click`` maps a link's target to its signed redirect, or None to leave that link as it is
    (the signer refuses it, or it is too long for a token); ``pixel_url`` is the open pixel.
    ``keep`` lists targets never rewritten — the unsubscribe link must stay a direct link.
    """

    click: Callable[[str], str | None] | None = None
    pixel_url: str | None = None
    keep: Collection[str] = ()


class _LinkFinder(HTMLParser):
    """Start tags of links (``<a href>``, ``<area href>``) with their line and column."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area") and any(name == "href" for name, _ in attrs):
            text = self.get_starttag_text()
            if text:
                line, col = self.getpos()
                self.found.append((line, col, text))


# One attribute of a start tag: name, then an optional value (quoted or bare). Walking the tag
# attribute by attribute means an "href=" inside another attribute's quoted value is never taken.
_TAG_NAME = re.compile(r"<[^\s/>]+")
_ATTRIBUTE = re.compile(
    r"""[\s/]*(?P<name>[^\s/>"'=][^\s/>=]*)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>]+))?"""
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _retarget(tag: str, click: Callable[[str], str | None], keep: Collection[str]) -> str:
    """``tag`` with its href pointed at the click redirect, when the target is trackable."""
    m = _TAG_NAME.match(tag)
    pos = m.end() if m else len(tag)
    while (a := _ATTRIBUTE.match(tag, pos)) is not None and a.end() > pos:
        pos = a.end()
        if a.group("name").lower() != "href" or a.group("value") is None:
            continue
        raw = a.group("value")
        if raw[:1] in "\"'":
            raw = raw[1:-1]
        target = htmllib.unescape(raw).strip()
        if target in keep:
            return tag
        tracked = click(target)
        if tracked is None:
            return tag
        start, end = a.span("value")
        return tag[:start] + '"' + htmllib.escape(tracked, quote=True) + '"' + tag[end:]
    return tag


def track_html(html: str, tracking: Tracking) -> str:
    """The HTML part with its web links sent through click redirects and the open pixel added.

    Only start tags the HTML parser sees are touched (never text, comments or scripts); each
    is rewritten in place, so the rest of the markup stays byte for byte as rendered.
    """
    if tracking.click is not None and "<" in html:
        finder = _LinkFinder()
        finder.feed(html)
        finder.close()
        if finder.found:
            starts = [0]
            starts += [i + 1 for i, ch in enumerate(html) if ch == "\n"]
            pieces: list[str] = []
            done = 0
            for line, col, text in finder.found:
                at = starts[line - 1] + col
                if at < done or html[at : at + len(text)] != text:
                    continue  # the parser's view and the text disagree: leave it alone
                pieces += [html[done:at], _retarget(text, tracking.click, tracking.keep)]
                done = at + len(text)
            html = "".join(pieces) + html[done:]
    if tracking.pixel_url is not None:
        pixel = (
            f'<img src="{htmllib.escape(tracking.pixel_url, quote=True)}" width="1" height="1" '
            'alt="" style="border:0;width:1px;height:1px">'
        )
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = html[:at] + pixel + html[at:]
        else:
            html += pixel
    return html


# ---------------------------------------------------------------- messages
