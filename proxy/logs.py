"""How podgate's processes log: plain text lines on a terminal, JSON lines for a collector.

``[server] log_format`` (or ``podgate serve --log-format``): ``text``, ``json``, or ``auto``
(the default: text when stderr is a terminal, JSON otherwise — under Docker, Kubernetes or a
supervisor someone parses the lines). JSON lines come from python-json-logger: each record is
one object with its time, level, logger and message, plus the record's extra fields; the
access log line (``proxy.context``) carries the request's ``RequestContext.fields`` that
way, so a collector reads ``status``, ``ttft_ms`` or ``key_name`` without parsing text.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["auto", "text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(log_format: LogFormat, stream: object = None) -> logging.Formatter:
    """The formatter for ``log_format`` (``auto`` looks at ``stream``, default stderr)."""
    if log_format == "auto":
        isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
        log_format = "text" if isatty is not None and isatty() else "json"
    if log_format == "json":
        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: LogFormat = "auto") -> None:
    """The process's logging: one stderr handler at ``level`` in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, sys.stderr))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
