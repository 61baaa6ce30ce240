"""Logging set-up: short event phrases with key=value pairs, as text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter stays at WARNING unless we debug
    # aioimaplib at DEBUG logs every byte, XOAUTH2 tokens included: never below WARNING
    logging.getLogger("aioimaplib").setLevel("WARNING")
    for name in ("mail.log", "aiosmtpd", "uvicorn.access", "apscheduler", "sqlalchemy"):
        logging.getLogger(name).setLevel("WARNING" if level != "DEBUG" else "INFO")
