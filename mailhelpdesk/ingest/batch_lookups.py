"""The threading maps of one ingest batch: read in a few set-based queries, kept up to date as
the batch's messages are applied.

The dedupe and thread steps ask, per message, "was this content applied?", "which ticket knows
one of these Message-IDs?" and "which ticket has this number?". For a batch, the writer asks
each of those once for every message (store/thread_lookup.py) and the steps read the answers
here, and only here. The rules: the first recorded row of a Message-ID wins, a trashed ticket
is never found.

Ordering per ticket is kept: after each message is applied (its savepoint committed) `applied`
adds what it recorded — its fingerprint, its Message-ID (and a forwarded original's) on its
ticket, the number of a ticket it opened — so a reply later in the same batch finds a ticket
the batch itself opened. A verified agent's message may have changed tickets in ways the maps
cannot follow (merge, trash, move), so after one the ticket maps are read again for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlmodel import Session

from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.ingest.facts import SUBJECT_TAG, thread_candidates
from mailhelpdesk.mail.understood import Understood
from mailhelpdesk.store import thread_lookup
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.tickets import FORWARD_DIRECTION


@dataclass
class BatchLookups:
    session: Session
    applied_fingerprints: dict[str, int] = field(default_factory=dict)
    # Message-ID -> ticket id of its first recorded row; Message-IDs of forwards we sent
    first_ticket_of: dict[str, int] = field(default_factory=dict)
    forward_ids: set[str] = field(default_factory=set)
    numbers: dict[int, Ticket | None] = field(default_factory=dict)
    _fingerprints: set[str] = field(default_factory=set)
    _message_ids: set[str] = field(default_factory=set)
    _tags: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, session: Session, batch: Sequence[Understood]) -> BatchLookups:
        found = cls(session)
        found._fingerprints = {u.parsed.fingerprint for u in batch}
        found._message_ids = {m for u in batch for m in thread_candidates(u.parsed)}
        found._tags = {
            int(m.group(1)) for u in batch for m in SUBJECT_TAG.finditer(u.parsed.subject)
        }
        found.reload()
        return found

    def reload(self) -> None:
        """Read every map again (the batch's writes were rolled back, say)."""
        self.applied_fingerprints = thread_lookup.applied_fingerprints(
            self.session, self._fingerprints
        )
        self.reload_tickets()

    def reload_tickets(self) -> None:
        """Read the Message-ID and ticket-number maps (again)."""
        self.first_ticket_of, self.forward_ids = {}, set()
        for _row, message_id, ticket_id, direction in thread_lookup.message_id_rows(
            self.session, self._message_ids
        ):
            self.first_ticket_of.setdefault(message_id, ticket_id)
            if direction == FORWARD_DIRECTION:
                self.forward_ids.add(message_id)
        by_number = thread_lookup.tickets_by_number(self.session, self._tags)
        self.numbers = {n: by_number.get(n) for n in self._tags}

    # -- what the steps ask ----------------------------------------------------------------------

    def ticket_by_number(self, number: int) -> Ticket | None:
        """store.get_ticket_by_number, from the map (a number not asked ahead, such as a signed
        address's, is read once and kept)."""
        if number not in self.numbers:
            self.numbers[number] = store.get_ticket_by_number(self.session, number)
        ticket = self.numbers[number]
        return ticket if ticket is not None and ticket.deleted_at is None else None

    def ticket_by_message_ids(self, message_ids: Iterable[str]) -> tuple[Ticket, str] | None:
        """The ticket of the first of `message_ids` we know (the first row recorded wins), not
        in the trash, and that Message-ID."""
        for message_id in message_ids:
            ticket_id = self.first_ticket_of.get(message_id)
            if ticket_id is None:
                continue
            ticket = self.session.get(Ticket, ticket_id)
            if ticket is not None and ticket.deleted_at is None:
                return ticket, message_id
        return None

    def is_forward_message_id(self, message_id: str) -> bool:
        return message_id in self.forward_ids

    # -- after a message is applied --------------------------------------------------------------

    def applied(
        self,
        *,
        fingerprint: str,
        inbound_id: int,
        ticket: Ticket | None,
        message_ids: Iterable[str | None],
        by_agent: bool,
    ) -> None:
        self.applied_fingerprints.setdefault(fingerprint, inbound_id)
        if by_agent:
            self.reload_tickets()
            return
        if ticket is None or ticket.id is None:
            return
        for message_id in message_ids:
            if message_id:
                self.first_ticket_of.setdefault(message_id[:998], ticket.id)
        if ticket.number in self._tags or ticket.number in self.numbers:
            self.numbers[ticket.number] = ticket
