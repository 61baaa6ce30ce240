"""Bounds on what one message may cost to parse, shared by the modules of the mail parser.

Why one place: the limits are a single policy against hostile mail (zip-bomb-like part counts,
absurd nesting, megabyte headers) and several modules enforce the same numbers; beyond each
bound the parser records a defect and goes on with what it has, it never raises.
"""

from __future__ import annotations

MAX_PARTS = 1000  # MIME parts walked; the rest is dropped with a defect (zip-bomb-like mail)
MAX_DEPTH = 30  # multipart nesting; no real client nests deeper than a handful
MAX_HEADER_VALUE = 65536  # characters kept of one header value
MAX_HEADERS = 5000  # header fields kept
MAX_REFERENCES = 500  # message ids kept from References (the newest ones, at the end)
DETECT_SAMPLE = 65536  # bytes given to charset detection; enough to decide, bounded in time
MAX_HTML_TO_TEXT = 2_000_000  # characters of HTML converted to text (html2text is pure Python)
