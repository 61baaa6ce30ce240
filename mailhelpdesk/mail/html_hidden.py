"""Hidden HTML removed before anything reads mail HTML (issue 17, defect 10).

Mail HTML can carry text a reader never sees: `display:none`, `visibility:hidden`, Outlook's
`mso-hide:all`, `font-size:0`, the `hidden` attribute. The sanitiser keeps only an allow-list of
style properties, so without this step such text became visible in the stored HTML and, in
HTML-only mail, part of the text that agent commands are read from: a customer could hide
`#status closed` in mail an agent then answered. Removing it first means what is stored, shown
and read is what the sender's reader showed.

Written on the standard library's tolerant HTMLParser: it only has to find the hidden subtrees
and write the rest back out; nh3 parses and cleans the result properly afterwards, so an
imperfect re-serialisation here can lose formatting, never let anything unsafe through.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|mso-hide\s*:\s*all"
    r"|font-size\s*:\s*0(?:\.0*)?(?:px|pt|em|rem|%)?\s*(?:!important)?\s*(?:;|$)"
    r"|(?:max-)?height\s*:\s*0(?:px)?\s*(?:!important)?\s*;\s*overflow\s*:\s*hidden"
    r"|opacity\s*:\s*0(?:\.0*)?\s*(?:;|$))",
    re.IGNORECASE,
)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
# where mail clients begin the quoted message in HTML (Outlook, Gmail, Thunderbird, Yahoo); a
# rule is put before it, so the text made from the HTML shows where the quote starts even when
# the client wrote no header lines (mail/reply_text.py cuts there)
_QUOTE_IDS = frozenset({"appendonsend", "divrplyfwdmsg", "mail-editor-reference-message-container"})
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "moz-cite-prefix", "yahoo_quoted", "outlookmessageheader"}
)
QUOTE_RULE = "_" * 32  # Outlook's own separator line


def _is_quote_start(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    if tag != "div":
        return False
    for name, value in attrs:
        if name == "id" and (value or "").strip().lower() in _QUOTE_IDS:
            return True
        if name == "class" and _QUOTE_CLASSES & set((value or "").lower().split()):
            return True
    return False


_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(.))", re.DOTALL)


def _plain_css(value: str) -> str:
    """A style as the browser reads it: comments gone, escapes (`n\\6f ne`) decoded."""

    def char(match: re.Match[str]) -> str:
        if match.group(1):
            code = int(match.group(1), 16)
            return chr(code) if 0 < code < 0xD800 or 0xDFFF < code <= 0x10FFFF else "\ufffd"
        return match.group(2)

    return _CSS_ESCAPE.sub(char, _CSS_COMMENT.sub("", value))


def is_hidden(attrs: list[tuple[str, str | None]]) -> bool:
    """Whether an element with these attributes is not shown."""
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "aria-hidden" and (value or "").strip().lower() == "true":
            continue  # for screen readers only; still shown
        if name == "style" and value and _HIDDEN_STYLE.search(_plain_css(value)):
            return True
    return False


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []
        self.hidden_at: int | None = None  # stack depth of the hidden element being skipped
        self.quoted = False  # the quote's rule was written

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        void = tag in _VOID
        if self.hidden_at is None and is_hidden(attrs):
            if not void:
                self.hidden_at = len(self.stack)
                self.stack.append(tag)
            return
        if not void:
            self.stack.append(tag)
        if self.hidden_at is None:
            if not self.quoted and _is_quote_start(tag, attrs):
                self.quoted = True
                self.out.append(f"<p>{QUOTE_RULE}</p>")
            self.out.append(_tag(tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.hidden_at is None and not is_hidden(attrs):
            self.out.append(_tag(tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.stack:
            return  # a stray end tag: nothing to close
        while self.stack:
            open_tag = self.stack.pop()
            if self.hidden_at is None:
                self.out.append(f"</{open_tag}>")
            elif len(self.stack) == self.hidden_at:
                self.hidden_at = None
            if open_tag == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.hidden_at is None:
            self.out.append(escape(data, quote=False))


def _tag(tag: str, attrs: list[tuple[str, str | None]]) -> str:
    parts = [tag] + [f'{n}="{escape(v, quote=True)}"' if v is not None else n for n, v in attrs]
    return "<" + " ".join(parts) + ">"


# only HTML that could hide something or holds a client's quote is parsed (the parse costs
# about a millisecond per kilobyte); escapes and comments could spell any of it, so they count
_CANDIDATE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|mso-hide|\shidden[\s=>/]|"
    r"font-size\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?![.\d]*[1-9])|height\s*:\s*0(?!\d)|"
    r"style\s*=\s*(?:\"[^\"]*|'[^']*)(?:\\|/\*)|"
    r"appendonsend|divrplyfwdmsg|reference-message|gmail_quote|moz-cite-prefix|yahoo_quoted|"
    r"outlookmessageheader",
    re.IGNORECASE,
)


def drop_hidden(html: str) -> str:
    """`html` without the elements a reader does not show (and everything inside them), and
    with a rule where a mail client's quoted message begins."""
    if not _CANDIDATE.search(html):
        return html
    parser = _Visible()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - HTMLParser on hostile markup: fall back to the input
        return html  # nh3 still cleans it; only hidden text may then show
    return "".join(parser.out)
