"""Notice templates: a sandboxed Jinja environment and `render_notice(name, context)`.

Templates live in the repository's top-level `templates/` folder (shipped in the wheel as
`mailhelpdesk/_templates`); a directory set in `[templates] dir` is searched first, so an
operator can override any file. Each notice `<name>` is three files under `notices/`:
`<name>.subject.txt`, `<name>.txt` and `<name>.html` (autoescaped). Undefined variables, syntax
errors and sandbox violations raise `NoticeRenderError`: a notice is rendered whole or not at all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from mailhelpdesk.errors import HelpdeskError

NOTICES = (
    "acknowledgement",
    "new_ticket",
    "customer_reply",
    "agent_response",
    "ticket_closed",
    "ticket_reopened",
    "command_error",
    "on_hold_woke",
    "sla_warning",
    "sla_breach",
    "reminder",
)

_PACKAGE = Path(__file__).resolve().parent.parent
# the wheel carries them inside the package; a source checkout has them at the repository root
DEFAULT_TEMPLATE_DIRS = (_PACKAGE / "_templates", _PACKAGE.parent / "templates")


class NoticeRenderError(HelpdeskError):
    """A notice template that cannot be rendered: missing, broken, or asking for undefined data."""


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str


def _autoescape(name: str | None) -> bool:
    return bool(name) and str(name).endswith((".html", ".htm"))


@functools.lru_cache(maxsize=8)
def environment(template_dir: str = "") -> SandboxedEnvironment:
    """The environment for an override folder ('' = shipped templates only); cached per folder."""
    # the first that exists: an installed wheel never falls back to a stray site-packages/templates
    search = [str(p) for p in DEFAULT_TEMPLATE_DIRS if p.is_dir()][:1]
    if template_dir:
        search.insert(0, template_dir)
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=_autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def available_notices(template_dir: str = "") -> list[str]:
    names = environment(template_dir).list_templates(
        filter_func=lambda n: n.startswith("notices/") and n.endswith(".subject.txt")
    )
    return sorted(n.removeprefix("notices/").removesuffix(".subject.txt") for n in names)


def render_file(
    env: jinja2.Environment, path: str, context: Mapping[str, Any], *, label: str = ""
) -> str:
    """One template of `env` rendered whole. Every template failure becomes one clear
    NoticeRenderError (`label` goes before the path); a missing template is left to the caller
    as jinja2.TemplateNotFound, since only it knows whether that is an error."""
    try:
        return env.get_template(path).render(dict(context))
    except jinja2.TemplateNotFound:
        raise
    except jinja2.UndefinedError as exc:
        raise NoticeRenderError(f"{label}{path}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise NoticeRenderError(f"{label}{path} line {exc.lineno}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise NoticeRenderError(f"{label}{path}: not allowed in a template: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any template failure is one clear error
        raise NoticeRenderError(f"{label}{path}: {type(exc).__name__}: {exc}") from None


def render_notice(
    name: str, context: Mapping[str, Any], *, template_dir: str = ""
) -> RenderedNotice:
    """Render notice `name` with `context`; raises NoticeRenderError, never returns half a mail."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise NoticeRenderError(f"notice {name!r}: not a notice name")
    env = environment(template_dir)
    parts: dict[str, str] = {}
    for part, suffix in (("subject", ".subject.txt"), ("text", ".txt"), ("html", ".html")):
        path = f"notices/{name}{suffix}"
        try:
            parts[part] = render_file(env, path, context, label=f"notice {name!r}: ")
        except jinja2.TemplateNotFound:
            known = ", ".join(available_notices(template_dir)) or "none"
            raise NoticeRenderError(
                f"notice {name!r}: template {path} not found (notices: {known})"
            ) from None
    subject = " ".join(parts["subject"].split())
    if not subject:
        raise NoticeRenderError(f"notice {name!r}: the subject renders empty")
    return RenderedNotice(subject=subject, text=parts["text"], html=parts["html"])
