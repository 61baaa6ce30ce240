"""Is this message verifiably from this domain, by the receiving MTA's Authentication-Results?

RFC 8601: the MTA that receives a message for us checks DKIM/SPF/DMARC and *prepends* an
`Authentication-Results: <authserv-id>; dkim=pass header.d=…` header. Anything below that
header was there when the message reached our MTA, so the sender may have written it. Hence:

- only the TOPMOST Authentication-Results header counts (the first in header order);
- it counts only when its authserv-id is one the operator configured as trusted
  (`[helpdesk] trusted_authserv_ids`); a topmost header from any other authserv-id, or one that
  does not parse, verifies nothing (we never look further down for a "better" one);
- it verifies `domain` when it holds `dkim=pass` with `header.d` equal to the domain (or
  `header.i` whose domain part equals it), or `dmarc=pass` with `header.from` equal to it.
  Equality is exact (case-insensitive): a signature by a parent domain does not count.

The operator's MTA must strip or rename Authentication-Results headers that arrive from outside
claiming its own authserv-id (RFC 8601 §5; Postfix+OpenDMARC, rspamd and Exchange do): otherwise
a sender can forge the topmost header when our MTA adds none. Note too that DKIM for a shared
mail provider's domain (`gmail.com`) proves only that the provider sent it; the provider is
trusted to have checked its user's From (Gmail, Outlook.com do).

Where the message came from matters as much (issue 17): over SMTP, any client that reaches the
listener can write its own topmost header. So Authentication-Results count only for mail handed
over by one of the operator's relays (`[smtp_listener] trusted_relays`, addresses or networks;
`relay_trusted`); from any other peer they are ignored, whatever they say. Mail fetched by IMAP
was delivered into the mailbox by the operator's MTA, which wrote the topmost header; imported
mail and mail of unknown origin never count.

A DKIM result counts only when its identity is aligned: `header.i` (the signing user or agent,
RFC 6376 §3.5 `i=`) must be `header.d` or a subdomain of it, and `header.d` must be the
domain; a result with `header.i` alone counts when the i= domain is the domain.

Parsing uses the `authres` library; a header it cannot parse verifies nothing. Pure: headers in,
a verdict out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import authres

HEADER = "authentication-results"


@dataclass(frozen=True)
class AuthVerdict:
    verified: bool
    reason: str  # short, for logs and the inbound reason


def _norm(text: str) -> str:
    return " ".join(text.split())


def check_authentication_results(
    headers: Sequence[tuple[str, str]], *, domain: str, trusted_authserv_ids: Iterable[str]
) -> AuthVerdict:
    """Does the topmost Authentication-Results header, from a trusted authserv-id, show DKIM or
    DMARC pass for `domain`? `headers` are (lower-case name, value) in message order."""
    trusted = {t.strip().lower() for t in trusted_authserv_ids if t.strip()}
    if not trusted:
        return AuthVerdict(False, "no trusted authserv-id configured")
    domain = domain.strip().lower().rstrip(".")
    if not domain:
        return AuthVerdict(False, "no sender domain")
    topmost = next((value for name, value in headers if name.lower() == HEADER), None)
    if topmost is None:
        return AuthVerdict(False, "no Authentication-Results header")
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(_norm(topmost))
    except Exception as exc:  # noqa: BLE001 - any unparsable header verifies nothing
        return AuthVerdict(
            False, f"topmost Authentication-Results does not parse: {type(exc).__name__}"
        )
    authserv_id = str(parsed.authserv_id or "").lower()
    if authserv_id not in trusted:
        return AuthVerdict(
            False, f"topmost Authentication-Results is from untrusted authserv-id {authserv_id!r}"
        )
    for result in parsed.results:
        method = str(result.method or "").lower()
        if str(result.result or "").lower() != "pass":
            continue
        props = {
            (str(p.type).lower(), str(p.name).lower()): str(p.value or "")
            .strip()
            .strip('"')
            .lower()
            for p in result.properties
        }
        if method == "dkim":
            d = props.get(("header", "d"), "").rstrip(".")
            i_domain = props.get(("header", "i"), "").rpartition("@")[2].rstrip(".")
            if _dkim_aligned(d, i_domain, domain):
                return AuthVerdict(True, f"dkim=pass for {domain} by {authserv_id}")
        elif method == "dmarc" and props.get(("header", "from"), "").rstrip(".") == domain:
            return AuthVerdict(True, f"dmarc=pass for {domain} by {authserv_id}")
    return AuthVerdict(False, f"no dkim/dmarc pass for {domain} from {authserv_id}")


def _dkim_aligned(d: str, i_domain: str, domain: str) -> bool:
    """Whether a passing DKIM result speaks for `domain`: d= is the domain and i= (when given)
    lies under d=; without d=, the i= domain must be the domain."""
    if d:
        return d == domain and (not i_domain or i_domain == d or i_domain.endswith("." + d))
    return bool(i_domain) and i_domain == domain


def relay_trusted(source: str, peer: str, trusted_relays: Iterable[str]) -> AuthVerdict:
    """May this message's Authentication-Results be believed, given how it arrived? SMTP: only
    when the peer address is one of `trusted_relays` (addresses or CIDR networks); IMAP: yes
    (the operator's MTA delivered it to the mailbox); anything else: no."""
    if source == "imap":
        return AuthVerdict(True, "fetched from the operator's mailbox")
    if source != "smtp":
        return AuthVerdict(False, f"Authentication-Results are not believed for {source} mail")
    try:
        address = ipaddress.ip_address(peer.strip().strip("[]").split("%")[0])
    except ValueError:
        return AuthVerdict(False, f"SMTP peer {peer[:60]!r} is not an address")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for item in trusted_relays:
        try:
            if address in ipaddress.ip_network(item.strip(), strict=False):
                return AuthVerdict(True, f"from trusted relay {address}")
        except ValueError:
            continue
    return AuthVerdict(
        False, f"Authentication-Results ignored: SMTP peer {address} is not a trusted relay"
    )
