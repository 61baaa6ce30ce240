"""/metrics of a running daemon, read with Prometheus' own text parser: the store's queue gauges,
notices held back by reason, and API latency by route template (never by raw path)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import make_mail
from tests.http.conftest import Api, running_api, unique


def _samples(api: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{api.base}/metrics", timeout=30).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_parse_and_report_queues_suppressions_and_latency(tmp_path: Path) -> None:
    with running_api(tmp_path) as api:
        token = api.token("all")
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api.base}/api/v1/tickets/100001", timeout=30).status_code == 401
        assert (
            httpx.get(f"{api.base}/api/v1/tickets/999999", headers=auth, timeout=30).status_code
            == 404
        )
        created = api.post(
            "/api/create_ticket",
            {
                "originator_email_address": "m@customer.test",
                "data": {"subject": "metrics", "content": "hello"},
            },
            token=token,
            key=unique(),
        )
        assert created.status_code == 200, created.text
        assert httpx.get(f"{api.base}/t/{'f' * 32}", timeout=30).status_code == 404
        # the same customer writes 12 new requests: past the 10 automatic notices per window,
        # the acknowledgements are written but held back by the rate limit
        for i in range(12):
            api.daemon.send(make_mail(subject=f"flood {i}", sender="flood@customer.test"))
        api.daemon.wait_idle(sending=True)
        engine = make_engine(api.daemon.db_url)
        try:
            with session_scope(engine) as session:
                spool.add_inbound(
                    session,
                    raw=b"Subject: set aside\r\n\r\nx\r\n",
                    envelope=spool.Envelope(source="import"),
                    now=SystemClock().now(),
                    set_aside="test: set aside on purpose",
                )
        finally:
            engine.dispose()
        samples = _samples(api)

    assert _value(samples, "mailhelpdesk_inbound_set_aside") == 1
    assert _value(samples, "mailhelpdesk_inbound_pending") == 0
    assert _value(samples, "mailhelpdesk_outbox_queued") == 0
    assert _value(samples, "mailhelpdesk_outbox_oldest_due_age_seconds") == 0
    assert _value(samples, "mailhelpdesk_notices_suppressed", reason="rate_limit") >= 2
    assert _value(samples, "mailhelpdesk_notices_suppressed", reason="own_address") == 0
    hist = "mailhelpdesk_http_request_duration_seconds_count"
    routes = {dict(labels)["route"] for (name, labels) in samples if name == hist}
    assert "/t/{secure_id}" in routes and "/api/create_ticket" in routes
    assert not any("100001" in r or "ffff" in r for r in routes), routes
    by_path = [r for r in routes if r.startswith("/api/v1/tickets/{number")]
    assert by_path, routes
    assert _value(samples, hist, route=by_path[0], method="GET", status="401") == 1
    assert _value(samples, hist, route=by_path[0], method="GET", status="404") == 1
    assert _value(samples, hist, route="/api/create_ticket", method="POST", status="200") == 1
