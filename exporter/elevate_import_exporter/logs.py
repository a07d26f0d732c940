"""Log formats (logfmt and JSON, as Prometheus' own exporters write them) and key redaction."""

from __future__ import annotations

import functools
import html.entities
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_LEVELS = tuple(_LEVELS)
LOG_FORMATS = ("logfmt", "json")


def _fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if record.exc_text:
        fields["error"] = record.exc_text
    return fields


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False)


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


def secret_pattern(secret: str) -> re.Pattern[str]:
    """``secret`` as text from outside may carry it: plainly or escaped, in any mix.

    An upstream or a proxy that echoes the key may escape any of its characters the way
    JSON (``\\u002d``), HTML (``&#45;``, ``&#x2d;``, ``&lowbar;``) or a URL (``%2D``) does;
    each such form is the key to whoever reads it. Case is ignored: a redaction too many
    costs nothing.
    """
    return re.compile("".join(_char_forms(c) for c in secret), re.IGNORECASE)


def _char_forms(char: str) -> str:
    code = ord(char)
    forms = [re.escape(char), f"&#0*{code};?", f"&#x0*{code:x};?"]
    if code < 0x10000:
        forms.append(rf"\\u{code:04x}")
    if code < 0x80:
        forms.append(f"%{code:02x}")
    forms += [re.escape("&" + name) for name in _entity_names().get(char, ())]
    return "(?:" + "|".join(forms) + ")"


@functools.cache
def _entity_names() -> dict[str, tuple[str, ...]]:
    """HTML's named character references by the character they stand for."""
    names: dict[str, list[str]] = {}
    for name, text in html.entities.html5.items():
        names.setdefault(text, []).append(name)
    return {text: tuple(found) for text, found in names.items()}


class RedactingFilter(logging.Filter):
    """Last line of defence: no secret leaves through a log line, whoever logged it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Escaped forms too: an exception may quote an answer that echoed the key escaped.
        self._patterns = [secret_pattern(s) for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._redact(record.getMessage()), None
        if record.exc_info:
            # Formatted here, so that the handler's formatter finds the text redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub("<redacted>", text)
        return text


def configure(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once, for the whole process (called by the CLI only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    log_uncaught()


def log_uncaught() -> None:
    """Route what Python would print to stderr by itself through logging: uncaught
    exceptions in the main thread and in other threads, exceptions it can only ignore,
    warnings. Every line then has the configured format and passes the key redaction."""
    log = logging.getLogger(__name__)

    def uncaught(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            log.info("interrupted")
            return
        log.critical("uncaught exception, exiting", exc_info=(kind, error, trace))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # ends the thread quietly, as by default
            return
        name = args.thread.name if args.thread is not None else "?"
        error = args.exc_value if args.exc_value is not None else args.exc_type()
        log.error(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, error, args.exc_traceback),
        )

    def unraisable(hook: sys.UnraisableHookArgs) -> None:
        error = hook.exc_value if hook.exc_value is not None else hook.exc_type()
        log.warning(
            "%s %r",
            hook.err_msg or "exception ignored in",
            hook.object,
            exc_info=(hook.exc_type, error, hook.exc_traceback),
        )

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
    sys.unraisablehook = unraisable
    logging.captureWarnings(True)
