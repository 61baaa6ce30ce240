"""HTML bodies: sanitising for display (`sanitize_html`) and readable text (`html_to_text`).

Why here and why these tools: mail HTML is hostile by default (scripts, event handlers,
javascript: and data: links, tracking CSS), so it is cleaned with nh3's allow-list before anyone
renders it; HTML-only mail also needs plain text for the reply trimmer and the classifier, which
html2text gives once its markdown habits (escapes, `[text](url)`, emphasis) are undone. Named
`html_text`, not `html`, so it never shadows the standard library's `html` package.
"""

from __future__ import annotations

import re
from functools import partial
from html import unescape

import html2text
import nh3

from mailhelpdesk.mail.html_hidden import drop_hidden

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


# what an inline style must not contain once its escapes and comments are undone: anything that
# loads a resource or runs code (CSS escapes such as `u\72l(` spell `url(` for the browser, and
# the sanitiser's own serialiser writes them back decoded)
_CSS_ACTIVE = ("url(", "expression(", "image-set(", "image(", "@import", "-moz-binding", "behavior")
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(.))", re.DOTALL)
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)
# where a blocked remote image points instead: no request leaves, the alt text stays
BLOCKED_IMAGE_SRC = "cid:remote-image-blocked"


def _css_unescape(match: re.Match[str]) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group(2)


def css_is_active(value: str) -> bool:
    """Whether an inline style loads or runs anything, read as a browser reads it: escapes
    decoded, comments and white space removed, case folded."""
    plain = _CSS_ESCAPE.sub(_css_unescape, _CSS_COMMENT.sub("", value))
    folded = "".join(_CSS_COMMENT.sub("", plain).split()).lower()
    return any(word in folded for word in _CSS_ACTIVE)


def _is_remote(url: str) -> bool:
    lowered = "".join(url.split()).lower()
    return lowered.startswith(("http:", "https:", "//", "ftp:")) or (
        ":" not in lowered.split("/", 1)[0] and bool(lowered) and not lowered.startswith("#")
    )


def _filter_attribute(
    tag: str, attribute: str, value: str, *, allow_remote_images: bool = False
) -> str | None:
    """Only images may use cid: and data:image/… sources; no link may point at data: or cid:;
    no style may load or run anything; remote images (tracking pixels) point nowhere unless
    allowed (`[ingest] allow_remote_images`)."""
    if attribute in ("href", "src", "cite"):
        lowered = value.strip().lower()
        if lowered.startswith("data:"):
            return (
                value if tag == "img" and attribute == "src" and _DATA_IMAGE.match(value) else None
            )
        if lowered.startswith("cid:") and not (tag == "img" and attribute == "src"):
            return None
        remote_image = tag == "img" and attribute == "src" and not lowered.startswith("cid:")
        if remote_image and not allow_remote_images and _is_remote(value):
            return BLOCKED_IMAGE_SRC
    if attribute == "style" and css_is_active(value):
        return None
    return value


def _cleaner(*, allow_remote_images: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
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
        attribute_filter=partial(_filter_attribute, allow_remote_images=allow_remote_images),
        url_schemes=_URL_SCHEMES,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=_SAFE_STYLE,
    )


_CLEANERS = {allow: _cleaner(allow_remote_images=allow) for allow in (False, True)}


def sanitize_html(html: str, *, allow_remote_images: bool = False) -> str:
    """Safe-to-display HTML: no scripts, styles, event handlers, javascript: URLs or forms, no
    hidden elements (mail/html_hidden.py), no remote images unless allowed; formatting,
    tables, links and inline (cid:/data:image) pictures stay."""
    try:
        cleaned = _CLEANERS[allow_remote_images].clean(drop_hidden(html))
    except Exception:  # noqa: BLE001 - nothing unsafe is better than something unsafe
        return nh3.escape(html)
    # the serialiser must never write back what the filter refused (it decodes CSS escapes):
    # a style attribute that reads as active after cleaning is dropped
    return _STYLE_ATTRIBUTE.sub(
        lambda m: "" if css_is_active(unescape(m.group(1))) else m.group(0), cleaned
    )


_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


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
