"""`report --html FILE`: one self-contained HTML page with the report's figures and charts.

The charts are drawn by matplotlib (its SVG backend, no pyplot global state) and inlined as
`<svg>` elements: the page fetches nothing, runs no script, and opens from a file or a mail
attachment alike. Text stays text in the SVG (`svg.fonttype = none`) so the page is searchable
and small. Every bar carries an id `<series>-<n>` (`volume-<queue>-<n>`, `first-response-<n>`,
`resolution-<n>`, `sla-met-0`, `sla-breached-0`, `backlog-<n>`, `agent-responses-<n>`,
`agent-closed-<n>`), so a reader (or a test) can tell the series apart.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from typing import Any

from mailhelpdesk.services.reports import AGE_BUCKETS, Report

_HOUR = 3600.0
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { padding: .2rem .8rem; border-bottom: 1px solid #ddd;
text-align: left; } figure { margin: 0; } svg { max-width: 100%; height: auto; }
"""


def render(report: Report, *, title: str = "Helpdesk report") -> str:
    """The page for `report`."""
    s = report.summary
    charts = [
        ("Tickets created per day, by queue", "volume", _volume(report)),
        ("First response time (hours)", "first-response", _histogram(
            report.first_response_values, "first-response", "#4c72b0")),
        ("Resolution time (hours)", "resolution", _histogram(
            report.resolution_values, "resolution", "#55a868")),
        ("SLA attainment (tickets closed)", "sla", _sla(report)),
        ("Backlog by age (open at the end of the period)", "backlog", _backlog(report)),
        ("Agent activity", "agents", _agents(report)),
    ]  # fmt: skip
    queue = f" — queue {html.escape(str(s['queue']))}" if s.get("queue") else ""
    rows = [
        ("Created", s["created"]),
        ("Closed", s["closed"]),
        ("Reopened", s["reopened"]),
        ("First response p50 / p90 (s)", _pair(s["first_response_s"])),
        ("Resolution p50 / p90 (s)", _pair(s["resolution_s"])),
        ("SLA met", "—" if s["sla_met_pct"] is None else f"{s['sla_met_pct']} %"),
    ]
    table = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in rows
    )
    figures = "".join(
        f'<section><h2>{html.escape(heading)}</h2><figure id="chart-{key}">{svg}</figure></section>'
        for heading, key, svg in charts
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}: {s['from']} to {s['to']}{queue}</h1>"
        f"<table id=summary>{table}</table>{figures}</body></html>\n"
    )


def _pair(values: dict[str, Any]) -> str:
    return " / ".join("—" if values[key] is None else str(values[key]) for key in ("p50", "p90"))


def _figure(width: float = 8.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure: Any) -> str:
    """The figure as an inline `<svg>` element (no XML prolog, no date: the same report gives
    the same page)."""
    import matplotlib as mpl

    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mailhelpdesk"}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _name(bars: Any, series: str) -> None:
    for index, patch in enumerate(bars.patches):
        patch.set_gid(f"{series}-{index}")


def _empty(ax: Any, text: str = "no data in this period") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")
    ax.set_xticks([])
    ax.set_yticks([])


def _volume(report: Report) -> str:
    figure, ax = _figure()
    days = report.period.days()
    positions = list(range(len(days)))
    bottom = [0] * len(days)
    for queue, counts in report.created_per_day.items():
        bars = ax.bar(positions, counts, bottom=bottom, label=queue)
        _name(bars, f"volume-{queue}")
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    if report.created_per_day:
        step = max(1, math.ceil(len(days) / 10))
        ax.set_xticks(positions[::step], [d.strftime("%m-%d") for d in days[::step]])
        ax.set_ylabel("tickets")
        ax.legend(loc="upper left", fontsize="small")
    else:
        _empty(ax)
    return _svg(figure)


def _histogram(values: Sequence[float], series: str, color: str) -> str:
    figure, ax = _figure()
    if values:
        hours = [v / _HOUR for v in values]
        _count, _edges, bars = ax.hist(hours, bins=min(20, max(5, len(hours))), color=color)
        _name(bars, series)
        ax.set_xlabel("hours")
        ax.set_ylabel("tickets")
    else:
        _empty(ax)
    return _svg(figure)


def _sla(report: Report) -> str:
    figure, ax = _figure(5.0, 2.8)
    met, breached = report.sla_counts.get("met", 0), report.sla_counts.get("breached", 0)
    if met or breached:
        _name(ax.barh(["met"], [met], color="#55a868", label="met"), "sla-met")
        _name(ax.barh(["breached"], [breached], color="#c44e52", label="breached"), "sla-breached")
        ax.set_xlabel("tickets")
    else:
        _empty(ax, "no closed ticket with an SLA target")
    return _svg(figure)


def _backlog(report: Report) -> str:
    figure, ax = _figure(6.0, 2.8)
    counts = report.summary["backlog_by_age"]
    labels = [name for name, _ in AGE_BUCKETS]
    bars = ax.bar(labels, [counts[name] for name in labels], color="#8172b2", label="open")
    _name(bars, "backlog")
    ax.set_ylabel("tickets")
    return _svg(figure)


def _agents(report: Report) -> str:
    agents = report.summary["by_agent"]
    figure, ax = _figure(8.0, max(2.4, 0.5 * len(agents) + 1))
    if agents:
        names = [a["email"] for a in agents]
        rows = list(range(len(names)))
        _name(
            ax.barh([r - 0.2 for r in rows], [a["responses"] for a in agents], height=0.4,
                    label="responses", color="#4c72b0"),
            "agent-responses",
        )  # fmt: skip
        _name(
            ax.barh([r + 0.2 for r in rows], [a["closed"] for a in agents], height=0.4,
                    label="closed", color="#dd8452"),
            "agent-closed",
        )  # fmt: skip
        ax.set_yticks(rows, names)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize="small")
    else:
        _empty(ax)
    return _svg(figure)
