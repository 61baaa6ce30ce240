"""The `q` language of resources.md §7, parsed by a lark LALR grammar into the filter trees of
store/ticket_query.py.

    q        := or_expr?
    or_expr  := and_expr ("OR" and_expr)*          OR binds looser than the implicit AND
    and_expr := unary+                             terms side by side are AND-ed
    unary    := "-" unary | atom                   `-term` negates
    atom     := "(" or_expr ")" | NAME ":" value | PHRASE | WORD
    value    := PHRASE | VALUE                     `subject:"a b"` is not a filter, see below

Free words and "quoted phrases" are full-text terms; `name:value` is a list filter of the
query string (list_terms.filter_for: `status:open`, `cf.order:7731`, `created:A..B`,
`due:<2026-12-01`), so every term means exactly what its query-string twin means.

The input is bounded before lark sees it (length, parenthesis depth, control characters), so
a hostile query costs a scan of at most MAX_CHARS characters and a tree of bounded depth. Every
error is a QueryError carrying the 1-based column it was found at.
"""

from __future__ import annotations

from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from mailhelpdesk.services.list_terms import Terms, filter_for
from mailhelpdesk.store.ticket_query import AllOf, AnyOf, Expr, Not, TextTerm, TicketFilter

MAX_CHARS = 1000
MAX_DEPTH = 20  # nested parentheses and negations
MAX_TERMS = 50

GRAMMAR = r"""
?start: or_expr?
?or_expr: and_expr (_OR and_expr)*
?and_expr: unary+
?unary: NEG unary -> negated
      | atom
?atom: "(" or_expr ")"
     | NAME value    -> field
     | PHRASE        -> phrase
     | WORD          -> word
?value: PHRASE | VALUE

_OR.3: /OR(?=[\s()]|$)/
NAME.2: /[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)?:/
NEG: /-(?=[^\s)])/
PHRASE: /"[^"]*"/
VALUE: /[^\s()"]+/
WORD: /[^\s()"\-][^\s()"]*/
%ignore /[ \t\r\n]+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True)


class QueryError(ValueError):
    """A q that cannot be read: the message ends with `at column N` (1-based)."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at column {column}")
        self.column = column


def parse(q: str, terms: Terms) -> Expr | None:
    """The filter tree of `q`; None for a q without any term."""
    _bound(q)
    try:
        tree = _PARSER.parse(q)
    except UnexpectedInput as exc:
        message = _describe(exc)
        at_end = message == "unexpected end of query" or exc.column == -1
        raise QueryError(message, len(q) + 1 if at_end else max(1, exc.column)) from None
    if not isinstance(tree, Tree) and not isinstance(tree, Token):
        return None
    if isinstance(tree, Tree) and tree.data == "start" and not tree.children:
        return None
    count = sum(1 for _ in _leaves(tree))
    if count > MAX_TERMS:
        raise QueryError(f"more than {MAX_TERMS} terms", 1)
    try:
        return _ToFilters(terms).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, QueryError):
            raise exc.orig_exc from None
        raise


def _bound(q: str) -> None:
    """Refuse what would make parsing costly or meaningless, before parsing."""
    if len(q) > MAX_CHARS:
        raise QueryError(f"q is at most {MAX_CHARS} characters", MAX_CHARS + 1)
    depth, quoted = 0, False
    for index, char in enumerate(q, start=1):
        if (char < " " and char not in "\t\r\n") or char == "\x7f":
            raise QueryError("control character", index)
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise QueryError(f"more than {MAX_DEPTH} nested parentheses", index)
        elif not quoted and char == ")":
            depth -= 1


def _describe(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        return "unexpected end of query"
    if isinstance(exc, UnexpectedToken):
        return f"unexpected {str(exc.token)[:20]!r}"
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    return "cannot read the query"


def _leaves(tree: Any | Token) -> list[Tree[Token]]:
    if isinstance(tree, Token):
        return []
    if tree.data in ("field", "phrase", "word"):
        return [tree]
    return [leaf for child in tree.children for leaf in _leaves(child)]


@v_args(tree=True)
class _ToFilters(Transformer[Token, Expr]):
    """Tree → filter tree; a field term that cannot be read is a QueryError at its column."""

    def __init__(self, terms: Terms) -> None:
        super().__init__()
        self._terms = terms

    def start(self, tree: Any) -> Expr:
        first: Expr = tree.children[0]
        return first

    def or_expr(self, tree: Any) -> Expr:
        return AnyOf(tuple(tree.children))

    def and_expr(self, tree: Any) -> Expr:
        return AllOf(tuple(tree.children))

    def negated(self, tree: Any) -> Expr:
        _sign, item = tree.children
        return Not(item)

    def word(self, tree: Any) -> Expr:
        return TicketFilter(text=(TextTerm(str(tree.children[0])),))

    def phrase(self, tree: Any) -> Expr:
        return TicketFilter(text=(TextTerm(str(tree.children[0])[1:-1], phrase=True),))

    def field(self, tree: Any) -> Expr:
        name, value = tree.children
        text = str(value)
        if value.type == "PHRASE":
            text = text[1:-1]
        try:
            return filter_for(str(name)[:-1], text, self._terms)
        except ValueError as exc:
            raise QueryError(f"{str(name)[:-1][:40]}: {exc}", name.column or 1) from None
