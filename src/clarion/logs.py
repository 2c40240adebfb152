"""Log output: JSON lines when stderr is not a terminal (for collectors), readable lines
with colours on a terminal. Nothing here ever formats a secret: callers log app ids, keys,
socket ids and paths without query strings, never secrets or signatures.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

# Attributes every LogRecord has; anything else was passed with extra={...}.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_COLOURS = {"DEBUG": "\033[2m", "INFO": "\033[36m", "WARNING": "\033[33m", "ERROR": "\033[31m"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


class TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD
        )
        colour = _COLOURS.get(record.levelname, "")
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (
            f"\033[2m{stamp}\033[0m {colour}{record.levelname.lower():7}\033[0m "
            f"{record.name}: {record.getMessage()}" + (f" \033[2m{extras}\033[0m" if extras else "")
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str, worker: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalFormatter() if sys.stderr.isatty() else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every webhook request with its full URL (query and all) at info: the
    # outbox logs what matters (failures, drops) itself, with the URL redacted.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if worker:
        logging.getLogger("clarion").info("worker started")


class OncePerInterval:
    """Log each *kind* of problem at most once per ``interval`` seconds.

    For failures a client can cause at will (a malformed frame, a bad PROXY header, a
    handler that raised on its input): one line per kind and interval, saying how many
    were not logged since, instead of a line (or a traceback) per frame. Kinds are
    strings chosen by the code, never by the client, so the table stays small.
    """

    __slots__ = ("_last", "interval", "logger")

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def log(
        self,
        level: int,
        kind: str,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
        now: float | None = None,
    ) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True if logged."""
        now = time.monotonic() if now is None else now
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._last[kind] = (now, 0)
        self.logger.log(
            level,
            message,
            *args,
            exc_info=exc_info,
            extra={"kind": kind, "suppressed": suppressed},
        )
        return True
