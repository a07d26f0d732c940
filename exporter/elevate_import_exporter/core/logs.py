"""Log formats (logfmt and JSON, as Prometheus' own exporters write them) and key redaction."""

from __future__ import annotations

import bisect
import functools
import html.entities
import itertools
import json
import logging
import re
import sys
import threading
from array import array
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import overload

_LEVELS = {name: getattr(logging, name.upper()) for name in ("debug", "info", "warning", "error")}
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


REDACTED = "<redacted>"
# Secrets shorter than this are not looked for in text a client gave: a key or password
# "P" would take every P out of a type or a label, and shows little in any case.
MIN_SECRET_CHARS = 4

# One escape each, whole, as JSON (and JavaScript), HTML and URL encoders write them; a
# UTF-8 character's bytes together.
_JSON = (
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|\\[\"'\\/bfnrt]"
)
_HTML = r"&#[xX][0-9a-fA-F]+;?|&#[0-9]+;?|&[A-Za-z][A-Za-z0-9]{0,31};?"
_URL = (
    r"%[cdCD][0-9a-fA-F]%[89abAB][0-9a-fA-F]|%[eE][0-9a-fA-F](?:%[89abAB][0-9a-fA-F]){2}"
    r"|%[fF][0-4](?:%[89abAB][0-9a-fA-F]){3}|%[0-9a-fA-F]{2}"
)
_PLUS = r"\+"  # a space, in a form-encoded URL
_ESCAPE_START = re.compile(r"[\\&%+]")
_JSON_SHORT = dict(zip("\"'\\/bfnrt", "\"'\\/\b\f\n\r\t", strict=True))
# Bounds of the work for one text: how deep escapes nest, how many readings of a layer are
# followed, how many characters all but the first reading of each layer may scan, and how
# many escapes all may decode (the minimum plus one for every two characters).
_MAX_LAYERS, _MAX_READINGS = 8, 64
_BUDGET_MIN, _BUDGET_PER_CHAR = 1 << 16, 16


class Redactor:
    """Finds a secret in text however JSON, HTML and URL encoders wrote it, nested or mixed.

    Rather than list forms, the text is decoded layer after layer (a JSON document quoted
    in a JSON string, a URL in a page) and each layer searched, case ignored: a redaction
    too many costs nothing. A decoded character knows the span it came from, so just the
    escapes that make up the secret go. Bounded: a few passes for a usual secret; for one
    holding ``\\``, ``&`` or ``%`` (which the wrong decoder reads as escapes) other orders
    of decoders within a budget, past which every stretch that could hide it goes whole.
    """

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an empty secret cannot be redacted")
        self._secret = _folded(secret)
        self._spaced = any(c.isspace() for c in secret)
        # '+' stands for a space only if the secret has one; if it has '+' too, read both ways.
        pluses = [False, True] if self._spaced and "+" in secret else [self._spaced]
        exotic = any(c in "\\&%" for c in secret)
        kinds = [[_JSON, _HTML, _URL]] + [[_JSON], [_HTML], [_URL]] * exotic
        self._decoders = [
            re.compile("|".join(kind + [_PLUS] * plus))
            for kind in kinds
            for plus in (pluses if _URL in kind else [False])
        ]

    @overload
    def sub(self, replacement: str, text: str) -> str: ...
    @overload
    def sub(self, replacement: bytes, text: bytes) -> bytes: ...
    def sub(self, replacement: str | bytes, text: str | bytes) -> str | bytes:
        """As ``re.Pattern.sub``; bytes that are not UTF-8 pass through unchanged."""
        into = replacement.decode() if isinstance(replacement, bytes) else replacement
        if isinstance(text, str):
            return self.redact(text, into)
        shown = text.decode("utf-8", "surrogateescape")
        return self.redact(shown, into).encode("utf-8", "surrogateescape")

    def redact(self, text: str, replacement: str = REDACTED) -> str:
        pieces: list[str] = []
        done = 0
        for start, end in _merged(self.spans(text)):
            pieces += [text[done:start], replacement]
            done = end
        return "".join(pieces) + text[done:] if pieces else text

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where ``text`` holds the secret, in any form (spans may overlap)."""
        readings = [_Reading(text)]
        spans = self._found(readings[0])
        if not _ESCAPE_START.search(text):
            return spans
        chars = _BUDGET_MIN + _BUDGET_PER_CHAR * len(text)
        escapes, seen = _BUDGET_MIN + len(text) // 2, {hash(text)}
        try:
            for _ in range(_MAX_LAYERS):
                following: list[_Reading] = []
                for reading, decoder in itertools.product(readings, self._decoders):
                    # Each layer's first reading by the first decoder is made (if escapes last).
                    if reading is not readings[0] or decoder is not self._decoders[0]:
                        if chars <= 0 or len(following) >= _MAX_READINGS:
                            raise _OverBudget
                        chars -= len(reading.text)
                    decoded, used = reading.decoded(decoder, escapes)
                    escapes -= used
                    if decoded is not None and hash(decoded.text) not in seen:
                        seen.add(hash(decoded.text))
                        spans += self._found(decoded)
                        following.append(decoded)
                for reading in readings:
                    reading.text = ""  # only its marks are needed from here on
                if not following:
                    return spans
                readings = following
        except _OverBudget:
            return spans + self._suspects(text)
        return spans

    def _found(self, reading: _Reading) -> list[tuple[int, int]]:
        folded, size = _folded(reading.text), len(self._secret)
        spans, at = [], folded.find(self._secret)
        while at >= 0:
            spans.append(reading.source(at, at + size))
            at = folded.find(self._secret, at + size)
        return spans

    def _suspects(self, text: str) -> list[tuple[int, int]]:
        """Failing closed: every stretch with escapes in it and room for the secret."""
        runs = re.finditer(r".+" if self._spaced else r"\S+", text, re.DOTALL)
        size = len(self._secret)
        return [r.span() for r in runs if len(r[0]) >= size and _ESCAPE_START.search(r[0])]


class _OverBudget(Exception):
    pass


class _Reading:
    """A text decoded from the one ``below``. For each decoded escape: where it starts and
    ends here, and its span below; the characters between escapes map one to one."""

    __slots__ = ("below", "ends", "starts", "text", "there")

    def __init__(self, text: str, below: _Reading | None = None) -> None:
        self.text, self.below = text, below
        self.starts, self.ends, self.there = array("q"), array("q"), array("q")

    def decoded(self, decoder: re.Pattern[str], allowance: int) -> tuple[_Reading | None, int]:
        """This text with the escapes ``decoder`` finds decoded (None if it finds none) and
        how many it looked at; :class:`_OverBudget` past ``allowance``."""
        text, done, size, used = self.text, 0, 0, 0
        pieces: list[str] = []
        result = _Reading("", self)
        matches = decoder.finditer(text)
        for used, match in enumerate(itertools.islice(matches, max(allowance, 0)), 1):  # noqa: B007
            plain = _unescaped(match[0])
            if plain is not None:
                start, end = match.span()
                size += start - done
                result.starts.append(size)
                pieces += (text[done:start], plain)
                size, done = size + len(plain), end
                result.ends.append(size)
                result.there.extend((start, end))
        if next(matches, None) is not None:
            raise _OverBudget
        if not pieces:
            return None, used
        result.text = "".join(pieces) + text[done:]
        return result, used

    def source(self, start: int, end: int) -> tuple[int, int]:
        """The span of the first text that ``start:end`` of this one was decoded from."""
        reading = self
        while reading.below is not None:
            start, end = reading._back(start)[0], reading._back(end - 1)[1]
            reading = reading.below
        return start, end

    def _back(self, index: int) -> tuple[int, int]:
        at = bisect.bisect_right(self.starts, index) - 1
        if at < 0:
            return index, index + 1
        if index < self.ends[at]:
            return self.there[2 * at], self.there[2 * at + 1]
        index += self.there[2 * at + 1] - self.ends[at]
        return index, index + 1


@functools.lru_cache(maxsize=4096)
def _unescaped(escape: str) -> str | None:
    """What one escape stands for; None for what only looks like one (``&bogus;``)."""
    head = escape[0]
    if head in "+%":
        data = bytes.fromhex(escape.replace("%", "")) if head == "%" else b" "
        # A lone byte above 127 as Latin-1, as older encoders wrote it.
        return data.decode("utf-8", "replace") if len(data) > 1 else chr(data[0])
    if head == "&":
        return _entity(escape[1:])
    if escape[1] == "u":
        code = int(escape[2:6], 16)
        if len(escape) == 12:  # a surrogate pair
            code = 0x10000 + ((code - 0xD800) << 10) + int(escape[8:], 16) - 0xDC00
        return chr(code)
    return chr(int(escape[2:], 16)) if escape[1] == "x" else _JSON_SHORT[escape[1]]


def _entity(reference: str) -> str | None:
    if not reference.startswith("#"):
        return html.entities.html5.get(reference)
    base = 16 if reference[1:2] in ("x", "X") else 10
    # Leading zeros as many as come; a number beyond Unicode is the replacement character.
    digits = reference[1 + (base == 16) :].rstrip(";").lstrip("0") or "0"
    code = int(digits, base) if len(digits) <= 8 else 0
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _folded(text: str) -> str:
    """``text`` in lower case, character for character (so that indices still match)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            start, end = merged[-1][0], max(merged.pop()[1], end)
        merged.append((start, end))
    return merged


def redacting(secrets: Iterable[str], replacement: str = REDACTED) -> Callable[[str], str]:
    """What takes every one of ``secrets`` (empty ones ignored) out of a text, in any form.

    The longest first: a secret that holds another (a password in its credentials) goes
    whole rather than leave the rest of itself behind.
    """
    redactors = [Redactor(s) for s in sorted({s for s in secrets if s}, key=len, reverse=True)]

    def redact(text: str) -> str:
        for redactor in redactors:
            text = redactor.redact(text, replacement)
        return text

    return redact


class RedactingFilter(logging.Filter):
    """Last line of defence: no secret leaves through a log line, whoever logged it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Escaped forms too: an exception may quote an answer that echoed the key escaped.
        self._redact = redacting(secrets)

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
