"""Rewriting the links of an email's HTML part and adding an image to it, CPU only.

The HTML is read with the standard library's tokenizer (:class:`html.parser.HTMLParser`, which
follows the HTML5 rules for comments, ``<script>``/``<style>`` text and character references),
and only the start tags of ``<a>`` elements whose ``href`` is rewritten are replaced; every other
character of the document stays as it was. Links inside comments (Outlook's ``<!--[if mso]>``
blocks) or scripts are not links to a mail client and are left alone.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser
from typing import Callable
from urllib.parse import urlsplit

#: Schemes whose links are followed in a browser, so a redirect can stand in for them.
WEB_SCHEMES = frozenset({"http", "https"})


def web_link(href: str) -> str | None:
    """``href`` as a browser reads it (surrounding whitespace dropped, WHATWG URL Standard) when
    it is an absolute http(s) URL with a host; None for ``mailto:``, ``tel:``, ``#anchors``,
    relative links and anything else."""
    url = href.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    return url if parts.scheme.lower() in WEB_SCHEMES and parts.netloc else None


class _Anchors(HTMLParser):
    """Collects every ``<a>`` start tag as ``(line, column, raw text, attributes)``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            line, column = self.getpos()  # where the tag starts: the position is advanced after
            self.found.append((line, column, self.get_starttag_text() or "", attrs))


def _start_tag(attrs: list[tuple[str, str | None]], self_closing: bool) -> str:
    written = "".join(f" {name}" if value is None else f' {name}="{escape(value, quote=True)}"'
                      for name, value in attrs)
    return f"<a{written}{' /' if self_closing else ''}>"


def rewrite(html: str, link: Callable[[str], str | None] | None = None, image: str | None = None) -> str:
    """The document with its links rewritten and an image added.

    Args:
        html: an HTML document or fragment.
        link: called with the target of each ``<a>`` whose ``href`` is an http(s) URL (as
            :func:`web_link` reads it, character references decoded); returns the URL to put in
            its place, or None to leave the link as it is. Other attributes are kept (values
            re-quoted).
        image: a URL to add as a 1x1 image before the last ``</body>`` (case-insensitive), or
            at the end without one; None adds nothing.
    Returns:
        The new document (the same string when nothing changed).
    """
    if link is not None and "<a" in html.lower():
        parser = _Anchors()
        parser.feed(html)
        parser.close()
        line_starts = [0, *(m.end() for m in re.finditer("\n", html))]
        pieces, done = [], 0
        for line, column, raw, attrs in parser.found:
            start = line_starts[line - 1] + column
            first = next((i for i, (name, _) in enumerate(attrs) if name == "href"), None)
            if first is None or html[start:start + len(raw)] != raw:
                continue
            target = web_link(attrs[first][1] or "")
            new = link(target) if target else None
            if new is None:
                continue
            attrs = list(attrs)
            attrs[first] = ("href", new)
            pieces += [html[done:start], _start_tag(attrs, raw.rstrip().endswith("/>"))]
            done = start + len(raw)
        if pieces:
            html = "".join(pieces) + html[done:]
    if image is not None:
        tag = (f'<img src="{escape(image, quote=True)}" width="1" height="1" alt="" '
               f'style="display:block;width:1px;height:1px;border:0" />')
        end = html.lower().rfind("</body>")
        html = f"{html[:end]}{tag}{html[end:]}" if end >= 0 else f"{html}{tag}"
    return html
