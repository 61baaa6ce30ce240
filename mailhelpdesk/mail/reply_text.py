"""The visible part of a reply: the new text, without the quoted history and the signature.

The helpdesk shows this as the response; the full text is kept beside it. `visible_text` is
pure and bounded: a line scan with anchored, length-limited patterns, so hostile bodies
(github's `pathological.txt`, a 767 kB quote) stay in milliseconds.

How it decides, top to bottom:

1. History starts at the first *marker*: an Outlook header block (`From:` followed within a
   few lines by `Sent:`/`To:`/`Subject:`, in 20 languages, bold or not), an "Original Message"
   or "Forwarded message" separator, a long rule followed by such a block, a Zoho
   `---- On … wrote ----`, a Gmail date line (`2016-03-03 17:21 GMT+01:00 Name`), or an
   attribution line: `On … wrote:` and its translations (`Am … schrieb …:`, `Le … a écrit :`,
   `… napisał(a):`, `… 写道：` …), also when wrapped over two or three lines. The attribution
   patterns of mail-parser-reply (all its languages) are used as well.
2. A header block with nothing written above it (a bare forward, Outlook's own header on top)
   is skipped: the text below it is the message. An attribution line is weaker evidence:
   with substantive text above it, history starts there; with at most a greeting above it and
   own text below its quote, the mail answers inline and the quoted questions stay (only the
   trailing quote goes); when the client put the whole quote on top and the one answer below
   it (bottom-posting), the answer alone is the reply.
3. From the end, repeatedly: trailing quote blocks (with their attribution line), the
   signature (`-- `, `--`, a `-Name` line, a rule line after a blank line, `Sent from my …`
   and its translations) when it is short.
4. If nothing is left (a reply made only of quotes, or only of a signature), the whole text is
   returned, stripped: never lose what the person wrote.

Closing words such as "Best regards, Jan" are kept: they are part of what the person wrote,
and the corpora disagree on them (alfonsrv strips them, discourse and github keep them).

Library choice (measured by tests/mail/test_reply_text.py on 228 cases from the six reply
corpora; a case counts only when all of its checks hold):

    mail-parser-reply 1.36 alone (all its languages, first reply's body)  134  58.8%
    email_reply_parser 0.5.12 (PyPI port of github's; measured, not a dependency) 143  62.7%
    these rules, with mail-parser-reply's attribution patterns            213  93.4%

mail-parser-reply finds headers in many languages but strips every line's indentation, takes
any `- x` list line for a signature and has no notion of inline answers or bottom-posting;
email_reply_parser knows only English `On … wrote:`. So the rules here are our own; the
library's per-language `wrote_header` patterns are kept as a fallback (one case more) and it
stays the dependency for them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from mailparser_reply.constants import MAIL_LANGUAGES

MAX_LINE = 1000  # longer lines are never markers (and are not matched against patterns)
MAX_HEADER_LINES = 3  # an attribution line wrapped over at most this many lines
SIGNATURE_MAX_LINES = 12  # a trailing block longer than this is not a signature
MOBILE_BLOCK_MAX_LINES = 40  # stacked "Sent from my …" lines

_QUOTE = re.compile(r"^\s*>")
# Gmail wraps "<a@b.c>:" or "<a@b.c> wrote:" so that the rest starts with ">"
_QUOTED_WROTE = re.compile(
    r"^\s*>\s*(?:wrote|schrieb|skrev|a [ée]crit)?\s*[:：]\s*$", re.IGNORECASE
)
_ADDRESS = re.compile(r"<|[\w.+-]+@[\w-]+\.[\w.-]+")
_SENTENCE_PUNCTUATION = ".!?…"

_ATTRIBUTION_LEAD = re.compile(
    r"^[\s>]*(?:on|am|le|op|el|il|den|em|dne|dnia|w dniu|\d|[^\W\d]{2,12}\.?,?\s+\d)", re.IGNORECASE
)
_ATTRIBUTION_ON = re.compile(
    r"^\s*(?:on|am|le|op|el|il|den|em)\s+\S*\d|^\s*on\s+\w+,", re.IGNORECASE
)
_WROTE_VERBS = (
    r"wrote|writes|schrieb|a\s+[ée]crit|escribi[óo]|escreveu|ha\s+scritto|scrisse|"
    r"napisa[łl]\(?a?\)?|napsal\(?a?\)?|skrev|het\s+volgende\s+geschreven|schreef|"
    r"написал(?:\(а\)|а)?|пише|kirjoitti|[íi]rta|yazd[ıi]|έγραψε"
)
_ATTRIBUTION = (
    # verb at the end: "Some One <a@b.c> wrote:", "At 6/16/2016 08:32 PM, you wrote:"
    re.compile(
        rf"^[\s>]*(?:-{{2,}}\s*)?.{{0,300}}?\b(?:{_WROTE_VERBS})\s*(?:-{{2,}})?\s*[:：]?\s*(?:-{{2,}})?\s*$",
        re.IGNORECASE,
    ),
    # German Gmail: "Name <a@b.c> schrieb am Fr., 28. Apr. 2017 um 11:53 Uhr:"
    re.compile(r"^[\s>]*.{0,200}\bschrieb am\b.{0,100}:\s*$", re.IGNORECASE),
    # "Am 16.11.2026 um 09:01 schrieb Support <support@example.test>:", "Op … schreef …:"
    re.compile(
        r"^[\s>]*(?:am|op|on|le|el|il|den|em|dne|dnia|w dniu)\s.{0,200}?"
        rf"\b(?:{_WROTE_VERBS})\b.{{0,150}}:\s*$",
        re.IGNORECASE,
    ),
    # no verb, only a date and an address: '30.09.2017, 18.30, "John Doe" <j@d.com>:' (Mail.ru)
    re.compile(r"^[\s>]*.{0,200}\d.{0,200}<[^<>\s]+@[^<>\s]+>\s*[:：]\s*$"),
    # Chinese/Japanese/Korean clients
    re.compile(r"^[\s>]*.{0,250}(?:写道|寫道|のメッセージ|님이 작성|が書きました)\s*[:：]?\s*$"),
)
# Gmail in some locales: "2016-03-03 17:21 GMT+01:00 Some One" / "2013/7/20 sam <info@x.org>"
_DATE_LINE = re.compile(
    r"^[\s>]*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b.{0,200}(?:GMT|UTC|<[^<>\s]+@[^<>\s]+>|[:：]\s*$)",
    re.IGNORECASE,
)
# The mail-parser-reply attribution patterns ("wrote_header") of every language it knows.
_LIBRARY_ATTRIBUTION = tuple(
    re.compile(spec["wrote_header"], re.IGNORECASE | re.MULTILINE)
    for spec in MAIL_LANGUAGES.values()
    if isinstance(spec, dict) and isinstance(spec.get("wrote_header"), str)
)

_FROM_FIELD = (
    r"from|von|de|da|van|fr[åa]n|fra|od|l[äa]hett[äa]j[äa]|от|felad[óo]|kimden|"
    r"发件人|寄件者|差出人|보낸\s*사람|afsender|avsändare"
)
_OTHER_FIELD = (
    r"sent|date|to|subject|cc|reply-to|gesendet|datum|dato|an|betreff|envoy[ée]|[àa]|objet|enviado|"
    r"fecha|para|asunto|inviato|data|oggetto|risposta|verzonden|aan|onderwerp|skickat|till|[äa]mne|"
    r"sendt|til|emne|wys[łl]ane|do|temat|отправлено|кому|тема|дата|l[äa]hetetty|vastaanottaja|aihe|"
    r"elk[üu]ldve|c[íi]mzett|t[áa]rgy|odesl[áa]no|komu|p[řr]edm[ěe]t|gönderildi|kime|konu|"
    r"发送时间|收件人|主题|日期|送信日時|宛先|件名|받는\s*사람|제목|보낸\s*날짜|enviada|assunto"
)
_FIELD_LINE = re.compile(
    rf"^[\s>]*\*?\s*(?:{_FROM_FIELD}|{_OTHER_FIELD})\s*\*?\s*[:：]", re.IGNORECASE
)
_FROM_LINE = re.compile(rf"^[\s>]*\*?\s*(?:{_FROM_FIELD})\s*\*?\s*[:：]\s*\*?\s*\S", re.IGNORECASE)
_OTHER_LINE = re.compile(rf"^[\s>]*\*?\s*(?:{_OTHER_FIELD})\s*\*?\s*[:：]", re.IGNORECASE)

_SEPARATOR = re.compile(
    r"^[\s>*]*[-_=*]*\s*(?:original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|oorspronkelijk bericht|oprindelig meddelelse|"
    r"originalmeddelande|opprinnelig melding|oprindelig besked|alkuperäinen viesti|"
    r"wiadomość oryginalna|"
    r"původní zpráva|исходное сообщение|eredeti üzenet|orijinal ileti|mensagem original|"
    r"forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|"
    r"messaggio inoltrato|doorgestuurd bericht|videresendt meddelelse|vidarebefordrat meddelande|"
    r"пересылаемое сообщение|原始邮件|原始郵件|転送メッセージ)\s*[-_=*]*\s*$",
    re.IGNORECASE,
)
_FORWARD_INTRO = re.compile(
    r"^\s*(?:begin forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message réexpédié|inicio del mensaje reenviado)\s*[:：]\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*(?:[-_=*~#+—]\s*){3,}$")
_LONG_RULE = re.compile(r"^[\s>]*[-_=]{10,}\s*$")

_SIGNATURE_DELIMITER = re.compile(r"^(?:--|__|—|ᐧ)$")
_DASH_NAME = re.compile(r"^-[A-Za-zÀ-ÿ][\w.'’ -]{0,40}$")
_MOBILE_LINE = re.compile(
    r"^[(<\s]*(?:sent|get|von meinem|envoy|enviado|inviato|verzonden|verstuurd|sendt|skickat|"
    r"wysłane|diese nachricht wurde|從我的|发自我的|from my)\b",
    re.IGNORECASE,
)
_SENT_FROM = re.compile(
    r"^\s*\(?(?:sent from my|sent from|sent with|sent using|sent via|get outlook for|"
    r"von meinem|gesendet von|envoy[ée] de mon|envoy[ée] depuis|enviado desde|enviado do meu|"
    r"inviato da|verzonden met|verstuurd vanaf|sendt fra|skickat från|wysłane z)\b[^,;:<]{0,60}"
    r"(?:<https?://[^<>\s]*>)?\)?\s*$",
    re.IGNORECASE,
)


# Outlook's plain-text stand-in for an inline picture: `[cid:image001.png@01DA2B3C.4D5E6F70]`
_CID_PLACEHOLDER = re.compile(r"\[cid:([^\]@\s]{1,200})(?:@[^\]\s]{0,200})?\]", re.IGNORECASE)


def readable_placeholders(text: str) -> str:
    """Outlook's `[cid:image001.png@…]` as a reader sees it: `[image: image001.png]` (the
    picture itself is an attachment of the message)."""
    return (
        _CID_PLACEHOLDER.sub(lambda m: f"[image: {m.group(1)}]", text)
        if "[cid:" in text.lower()
        else text
    )


def visible_text(text: str) -> str:
    """The reply with quoted history and signature stripped; the whole text (stripped) when
    stripping would leave nothing. Outlook's picture placeholders read as `[image: name]`."""
    full = readable_placeholders(text.replace("\r\n", "\n").replace("\r", "\n"))
    if not full.strip():
        return ""
    lines = full.split("\n")
    begin, end = _history_start(lines)
    kept = _strip_tail(lines[begin:end])
    result = "\n".join(kept).strip()
    return result or full.strip()


# Outlook's separator above a quoted message: a rule of underscores, with or without the
# From:/Sent: lines below it (some Outlook versions and settings leave them out)
_OUTLOOK_RULE = re.compile(r"^\s*_{30,}\s*$")


def own_text(text: str) -> str:
    """The writer's own part of a reply: the lines above its quoted history, cut also at the
    first `>` line and at Outlook's underscore rule even when no header lines follow it. Unlike
    `visible_text` it never falls back to the whole text: "" when the history starts at the top.
    Agent commands are read only from here (issue 17, defect 10: a quote is never the agent's)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    begin, end = _history_start(lines)
    kept: list[str] = []
    for line in lines[begin:end]:
        if line.lstrip().startswith(">") or _OUTLOOK_RULE.match(line):
            break
        kept.append(line)
    return "\n".join(kept)


# ---- markers --------------------------------------------------------------------------------


# Both tests below run on every line of a body. As regular expressions searched from every
# position (`[^\W\d_]{2,}[.!?…]+\s*$`, and the address pattern) they cost 20-40 us per line
# of letters, and a 3 MiB plain-text body spent seconds in them; reading the end of the line,
# or looking for "@" first, gives the same answers in constant or linear time.
def _ends_sentence(line: str) -> bool:
    """The line ends with a word of two letters or more and closing punctuation (`…done.`)."""
    text = line.rstrip()
    word = text.rstrip(_SENTENCE_PUNCTUATION)
    if len(word) == len(text) or len(word) < 2:
        return False
    return all(c.isalnum() and not c.isdecimal() and c != "_" for c in word[-2:])


def _has_address(line: str) -> bool:
    """An `<` or something shaped like an address."""
    return "<" in line or ("@" in line and _ADDRESS.search(line) is not None)


def _is_attribution(lines: list[str], index: int) -> int:
    """How many lines an attribution line (`On … wrote:`) at `index` spans, or 0.

    A wrapped attribution may span up to three lines (five when Gmail also broke the address
    out onto lines of its own); the first line must look like the start of one, and the join
    is refused when its last line alone is already an attribution (then that line is it)."""
    first = lines[index]
    if not first.strip() or len(first) > MAX_LINE or _QUOTE.match(first):
        return 0
    if _attribution_text(first.strip()):
        return 1
    if _ends_sentence(first) or not (_ATTRIBUTION_LEAD.match(first) or _has_address(first)):
        return 0
    most = MAX_HEADER_LINES + (2 if _ATTRIBUTION_ON.match(first) else 0)
    joined = first.strip()
    parts = 1
    for span in range(2, MAX_HEADER_LINES + 3):
        if index + span > len(lines):
            break
        line = lines[index + span - 1]
        if len(line) > MAX_LINE or (_QUOTE.match(line) and not _QUOTED_WROTE.match(line)):
            break
        if not line.strip():
            if span > 2 and not _ATTRIBUTION_ON.match(first):
                break
            continue
        parts += 1
        if parts > most:
            break
        joined = f"{joined} {line.strip()}"
        if len(joined) > 400:
            break
        if _attribution_text(joined):
            alone = line.strip()
            return 0 if _ATTRIBUTION_LEAD.match(alone) and _attribution_text(alone) else span
    return 0


@lru_cache(maxsize=4096)
def _attribution_text(text: str) -> bool:
    """Whether one (joined) line reads as an attribution: it must end like one, with a colon,
    as Zoho's `---- On … wrote ----`, or as `On <date> … wrote`; "see below what my colleague
    wrote" is prose."""
    tail = text.rstrip()
    if not tail:
        return False
    ends_like_one = tail.endswith((":", "：")) or re.search(
        r"wrote\s*-{2,}\s*$", tail, re.IGNORECASE
    )
    if not ends_like_one and not (tail.lower().endswith("wrote") and _ATTRIBUTION_ON.match(text)):
        return bool(_DATE_LINE.match(text))
    if any(pattern.match(text) for pattern in _ATTRIBUTION):
        return not _looks_like_prose(text)
    if _DATE_LINE.match(text):
        return True
    return any(pattern.search(text) for pattern in _LIBRARY_ATTRIBUTION)


def _looks_like_prose(text: str) -> bool:
    """`It's interesting how URLs contain patterns like "wrote:"` is not an attribution."""
    return bool(
        re.search(
            r"\"[^\"]*(?:wrote|schrieb)[^\"]*\"|https?://\S*(?:wrote|schrieb)", text, re.IGNORECASE
        )
    )


def _is_outlook_block(lines: list[str], index: int) -> bool:
    """A `From:` line followed within five lines by another header field (Sent:, To: …)."""
    if not _FROM_LINE.match(lines[index]) or len(lines[index]) > MAX_LINE:
        return False
    for line in lines[index + 1 : index + 6]:
        if _OTHER_LINE.match(line):
            return True
        if line.strip() and not _FIELD_LINE.match(line) and len(line) > 120:
            return False
    return False


def _is_header_block_start(lines: list[str], index: int) -> bool:
    """A header block that starts with Date:/Sent: and has a From: within five lines."""
    if not _OTHER_LINE.match(lines[index]) or len(lines[index]) > MAX_LINE:
        return False
    fields = 1
    has_from = False
    for line in lines[index + 1 : index + 6]:
        if _FROM_LINE.match(line):
            has_from = True
            fields += 1
        elif _OTHER_LINE.match(line):
            fields += 1
        elif line.strip():
            break
    return has_from and fields >= 3


def _is_strong_marker(lines: list[str], index: int) -> bool:
    """Separators and header blocks: history starts here whatever stands above."""
    line = lines[index]
    if len(line) > MAX_LINE or not line.strip():
        return False
    if _SEPARATOR.match(line) or _FORWARD_INTRO.match(line):
        return True
    if _LONG_RULE.match(line):
        following = [n for n in lines[index + 1 : index + 4] if n.strip()]
        return bool(following) and _FROM_LINE.match(following[0]) is not None
    return _is_outlook_block(lines, index) or _is_header_block_start(lines, index)


def _history_start(lines: list[str]) -> tuple[int, int]:
    """(first line of the reply, first line of quoted history); (0, len(lines)) when there is
    no history. The reply starts later than 0 when the client put the quote on top
    (bottom-posting): then the attribution and that quote are history too."""
    begin = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.lstrip().startswith(">"):
            index += 1  # quoted lines are never where history starts; trailing ones go later
            continue
        if _is_strong_marker(lines, index):
            if any(line.strip() for line in lines[begin:index]):
                return begin, index
            # a forward, or a header block on top (nothing written above it): the text below
            # the header block is the message
            begin = index = _after_header_block(lines, index)
            continue
        span = _is_attribution(lines, index)
        if span:
            mode = _answer_mode(lines, index, span)
            if mode == "inline":
                index += span
                continue
            if mode == "below":
                begin = _after_quote(lines, index + span)
                index = begin
                continue
            return begin, index
        index += 1
    return begin, len(lines)


def _after_header_block(lines: list[str], start: int) -> int:
    """The first line after a separator and/or header block starting at `start`: header
    fields and their wrapped continuations up to the first blank line."""
    position = start
    if (
        _SEPARATOR.match(lines[position])
        or _FORWARD_INTRO.match(lines[position])
        or _LONG_RULE.match(lines[position])
    ):
        position += 1
    while position < len(lines) and not lines[position].strip():
        position += 1
    while position < len(lines) and lines[position].strip():
        position += 1
    return position


def _answer_mode(lines: list[str], index: int, span: int) -> str:
    """How an attribution at `index` is used: "cut" (history starts here), "inline" (answers
    between the quoted lines: keep them), or "below" (the quote is on top and the one answer
    below it: the answer alone is the reply)."""
    above = [line for line in lines[:index] if line.strip()]
    if len(above) > 1 or (above and len(above[0].strip()) > 40):
        return "cut"
    position = index + span
    blocks = 0  # own-text blocks after a quote block
    in_quote = False
    seen_quote = False
    while position < len(lines):
        line = lines[position]
        if _QUOTE.match(line):
            in_quote = seen_quote = True
        elif line.strip():
            if not seen_quote:
                return "below" if not above else "cut"  # "On … wrote:" then plain text
            if _starts_signature(lines, position) or _is_strong_marker(lines, position):
                break
            if in_quote:
                blocks += 1
                in_quote = False
        position += 1
    if blocks == 0:
        return "cut"
    if blocks == 1 and not above and not _quote_follows(lines, index + span):
        return "below"
    return "inline"


def _quote_follows(lines: list[str], start: int) -> bool:
    """Whether, after the first quote block and the own text below it, another quote block
    comes that is followed by more own text (interleaved answers)."""
    state = 0  # 0 before the first quote, 1 in it, 2 in own text, 3 in a later quote
    for position in range(start, len(lines)):
        line = lines[position]
        if _QUOTE.match(line):
            state = 1 if state <= 1 else 3
        elif line.strip():
            if state == 3 and not _starts_signature(lines, position):
                return True
            state = 2 if state in (1, 2) else state
    return False


def _after_quote(lines: list[str], start: int) -> int:
    """The first line after the quote block (and blank lines) that begins at `start`."""
    position = start
    while position < len(lines) and (_QUOTE.match(lines[position]) or not lines[position].strip()):
        position += 1
    return position


# ---- the tail: quotes and signature ------------------------------------------------------------


def _starts_signature(lines: list[str], index: int) -> bool:
    """Whether a signature starts at `index` and runs (short) to the end of `lines`."""
    line = lines[index]
    if len(line) > MAX_LINE:
        return False
    # the line's own shape first: most lines start nothing, and reading the tail for each of
    # them made the trimmer quadratic in the message's last lines (docs/performance.md)
    stripped = line.strip()
    delimiter = _SIGNATURE_DELIMITER.match(stripped) is not None
    sent_from = _SENT_FROM.match(stripped) is not None
    dash_name = _DASH_NAME.match(stripped) is not None
    rule = _RULE.match(stripped) is not None
    if not (delimiter or sent_from or dash_name or rule):
        return False
    tail = _nonblank_tail(lines, index + 1, SIGNATURE_MAX_LINES + 1)
    if any(_QUOTE.match(n) for n in tail) or len(tail) > SIGNATURE_MAX_LINES:
        return False
    after_blank = index == 0 or not lines[index - 1].strip()
    if delimiter:
        return True
    if sent_from and len(tail) <= 3:
        return True
    if dash_name and len(tail) <= 6 and index > 0:
        return after_blank or len(stripped) < 30  # "-Abhishek Kona", not "-webkit-box-shadow…"
    return rule and after_blank  # a rule under a heading is not one


def _nonblank_tail(lines: list[str], start: int, limit: int) -> list[str]:
    """Up to `limit` non-blank lines from `start` on: enough to tell "short" from "long"
    without walking the rest of a long message for every candidate line."""
    found: list[str] = []
    for position in range(start, len(lines)):
        if lines[position].strip():
            found.append(lines[position])
            if len(found) >= limit:
                break
    return found


def _strip_tail(lines: list[str]) -> list[str]:
    """Drop trailing quote blocks (with their attribution) and a trailing short signature."""
    lines = list(lines)
    for _ in range(50):  # each round removes something, and rounds are few; bounded anyway
        before = len(lines)
        while lines and not lines[-1].strip():
            lines.pop()
        if lines and _QUOTE.match(lines[-1]):
            while lines and (_QUOTE.match(lines[-1]) or not lines[-1].strip()):
                lines.pop()
            for span in range(MAX_HEADER_LINES, 0, -1):
                if len(lines) >= span and _is_attribution(lines, len(lines) - span) == span:
                    del lines[-span:]
                    break
        signature = _signature_start(lines)
        if signature is not None and signature > 0:
            del lines[signature:]
        if len(lines) == before:
            break
    return lines


def _signature_start(lines: list[str]) -> int | None:
    """The first line of a trailing signature, or None. Looks only at the last lines."""
    start, seen = len(lines), 0
    while start > 0 and seen <= MOBILE_BLOCK_MAX_LINES:
        start -= 1
        seen += bool(lines[start].strip())
    for index in range(start, len(lines)):
        if lines[index].strip() and (
            _starts_signature(lines, index) or _starts_mobile_block(lines, index)
        ):
            return index
    return None


def _starts_mobile_block(lines: list[str], index: int) -> bool:
    """`Sent from my iPhone` and its kin, followed only by more of them or short lines: the
    lines phones and mail apps append (discourse's signatures sample stacks 28 of them)."""
    if not _SENT_FROM.match(lines[index].strip()):
        return False
    tail = [line.strip() for line in _nonblank_tail(lines, index + 1, MOBILE_BLOCK_MAX_LINES + 1)]
    if len(tail) > MOBILE_BLOCK_MAX_LINES:
        return False
    return all(
        _MOBILE_LINE.match(line) or (len(line.split()) <= 8 and not _QUOTE.match(line))
        for line in tail
    )
