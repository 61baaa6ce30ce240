"""multipart/form-data bodies for the create and respond endpoints (resources.md §2, "Create and
respond with files"): turned into the same JSON object a JSON body would be, so one model, one
check, one fingerprint and one handler serve both.

    a part with a filename     → one item of `attachments`: {name, mime_type, content_base64}
    the text part `data`       → parsed as a JSON object (the nested body of /api/create_ticket)
    any other text part        → a top-level field, its value a string (the models coerce
                                 "true" and "42" the way they do JSON); repeated: a list

The body was already read within the size limit (413 before anything is parsed).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from mailhelpdesk.http.errors import ApiError

MAX_PARTS = 200
JSON_FIELDS = ("data",)


async def form_payload(headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
    """The JSON object a multipart body stands for; 400 `invalid_multipart` when it cannot be
    parsed."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(
        Headers(headers=dict(headers)),
        stream(),
        max_files=MAX_PARTS,
        max_fields=MAX_PARTS,
        max_part_size=len(raw) + 1,
    )
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError) as exc:
        raise ApiError(
            400, "invalid_multipart", f"The multipart/form-data body cannot be read: {exc}"
        ) from None
    payload: dict[str, Any] = {}
    files: list[dict[str, str]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                files.append(
                    {
                        "name": value.filename or name,
                        "mime_type": value.content_type or "application/octet-stream",
                        "content_base64": base64.b64encode(data).decode("ascii"),
                    }
                )
                continue
            item: Any = value
            if name in JSON_FIELDS:
                try:
                    item = json.loads(value)
                except ValueError:
                    raise ApiError(
                        400, "invalid_multipart", f"The part {name!r} must be a JSON object."
                    ) from None
            if name in payload:
                previous = payload[name]
                payload[name] = (
                    [*previous, item] if isinstance(previous, list) else [previous, item]
                )
            else:
                payload[name] = item
    finally:
        await form.close()
    if files:
        payload["attachments"] = files
    return payload
