"""HTML bodies: sanitising for display (`sanitize_html`) and readable text (`html_to_text`).

Why here and why these tools: mail HTML is hostile by default (scripts, event handlers,
javascript: and data: links, tracking CSS), so it is cleaned with nh3's allow-list before anyone
renders it; HTML-only mail also needs plain text for the reply trimmer and the classifier, which
html2text gives once its markdown habits (escapes, `[text](url)`, emphasis) are undone. Named
`html_text`, not `html`, so it never shadows the standard library's `html` package.
"""

from __future__ import annotations

import re

import html2text
import nh3

_SAFE_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "center", "u", "s", "tfoot"}
_SAFE_ATTRIBUTES: dict[str, set[str]] = {
    key: set(val) for key, val in nh3.ALLOWED_ATTRIBUTES.items()
}
for _tag in ("td", "th", "table", "tr", "div", "p", "span", "img", "font"):
    _SAFE_ATTRIBUTES.setdefault(_tag, set()).update(
        {"style", "width", "height", "align", "valign", "bgcolor"}
    )
_SAFE_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_SAFE_ATTRIBUTES.setdefault("a", set()).update({"title", "name"})
_SAFE_ATTRIBUTES.setdefault("*", set()).update({"dir", "lang", "title"})
_SAFE_STYLE = {
    "color",
    "background-color",
    "background",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "text-align",
    "text-decoration",
    "text-indent",
    "vertical-align",
    "white-space",
    "margin",
    "margin-left",
    "margin-right",
    "margin-top",
    "margin-bottom",
    "padding",
    "padding-left",
    "padding-right",
    "padding-top",
    "padding-bottom",
    "border",
    "border-left",
    "border-right",
    "border-top",
    "border-bottom",
    "border-collapse",
    "width",
    "height",
    "line-height",
    "list-style-type",
}
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid", "data"}
_DATA_IMAGE = re.compile(r"^\s*data:image/(png|gif|jpe?g|webp|bmp);base64,", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Only images may use cid: and data:image/… sources; no link may point at data: or cid:."""
    if attribute in ("href", "src", "cite"):
        lowered = value.strip().lower()
        if lowered.startswith("data:"):
            return (
                value if tag == "img" and attribute == "src" and _DATA_IMAGE.match(value) else None
            )
        if lowered.startswith("cid:") and not (tag == "img" and attribute == "src"):
            return None
    if attribute == "style" and ("expression" in value.lower() or "url(" in value.lower()):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=_SAFE_TAGS,
    clean_content_tags={
        "script",
        "style",
        "title",
        "head",
        "noscript",
        "template",
        "iframe",
        "object",
        "embed",
        "svg",
        "math",
        "xml",
    },
    attributes=_SAFE_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    url_schemes=_URL_SCHEMES,
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
    filter_style_properties=_SAFE_STYLE,
)


def sanitize_html(html: str) -> str:
    """Safe-to-display HTML: no scripts, styles, event handlers, javascript: URLs or forms;
    formatting, tables, links and inline (cid:/data:image) pictures stay."""
    try:
        return _CLEANER.clean(html)
    except Exception:  # noqa: BLE001 - nothing unsafe is better than something unsafe
        return nh3.escape(html)


_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\(([^()\n]*?)(?:\s+\"[^\"\n]*\")?\)")
_CELL_END = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_ROW_END = re.compile(r"</tr\s*>", re.IGNORECASE)
_AUTO_LINK = re.compile(r"<((?:https?|ftp|mailto):[^<>\s]+)>")
_MD_ESCAPES = (
    (re.compile(r"^(\s*\d+)\\\.(?=\s)", re.MULTILINE), r"\1."),
    (re.compile(r"^(\s*)\\([-+])", re.MULTILINE), r"\1\2"),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!])"), r"\1"),
)


def _link_text(match: re.Match[str]) -> str:
    """A markdown link or image from html2text back to plain text: `text (url)`, or just one
    of them when the other adds nothing (same text, mailto: of it, in-page anchor, image)."""
    text, url = match.group(1).strip(), match.group(2)
    if match.group(0).startswith("!"):
        return text
    if not url or url == text or url.removeprefix("mailto:") == text or url.startswith("#"):
        return text or url
    return f"{text} ({url})" if text else url


def html_to_text(html: str) -> str:
    """Readable plain text for HTML-only mail: no wrapping, no emphasis marks, links as
    `text (url)`, quotes as `> ` lines (which the reply trimmer understands), images dropped."""
    if not html.strip():
        return ""
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_emphasis = True
    converter.ignore_images = True
    converter.unicode_snob = True
    converter.ignore_tables = True
    converter.single_line_break = False
    converter.use_automatic_links = True
    # layout tables: a cell ends with a space and a row with a line break, instead of the
    # markdown tables (or glued-together cells) html2text would otherwise give
    html = _CELL_END.sub(r"\g<0> ", html)
    html = _ROW_END.sub(r"\g<0><br>", html)
    try:
        text = converter.handle(html)
    except Exception:  # noqa: BLE001 - html2text on hostile markup: fall back to tag stripping
        text = re.sub(r"<[^>]*>", " ", html)
    for pattern, replacement in _MD_ESCAPES:
        text = pattern.sub(replacement, text)
    text = _MD_LINK.sub(_link_text, text)
    text = _AUTO_LINK.sub(r"\1", text)
    text = text.replace("\u00a0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
