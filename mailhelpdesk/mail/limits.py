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
# A Content-Type or Content-Disposition the stdlib parser is given: its structured parser costs
# seconds for a 65 KB value of thousands of parameters or words, and it parses the value again on
# every access. Beyond either bound it sees only the type and the boundary (MimeHeaderBoundedDefect).
MAX_MIME_HEADER = 2048  # characters
MAX_MIME_PARAMS = 50  # parameters
MAX_MIME_PARAMS_READ = 500  # parameters of one MIME header read at all (RFC 2231 parts included)
