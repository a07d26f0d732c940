"""How the ``status`` command shows a check: a live view, plain lines, or one JSON document.

The live view (a terminal, with ``--wait``) keeps one line per id and a footer, and
redraws them in place: the cursor goes back up over the lines it drew (CSI n A) and
each line is cleared (CSI 2 K) and written again. Colour unless ``NO_COLOR`` is set.
Plain lines (not a terminal) add a line whenever an id's status changes, so a CI log
reads as a history. Text from outside is on one line here whatever it holds.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from elevate_import_exporter.core.model import one_line
from elevate_import_exporter.polling.status import IdState, Outcome, Progress

CSI = "\x1b["
HIDE_CURSOR = CSI + "?25l"
SHOW_CURSOR = CSI + "?25h"
CLEAR_LINE = CSI + "2K"
_RESET = CSI + "0m"
_COLOURS = {
    "SUCCESS": "32",  # green
    "FAILURE": "1;31",  # bold red
    "ABORTED": "1;31",
    "NOT_FOUND": "31",
    "ERROR": "35",  # magenta: the API, not the import
}
_ON_THE_WAY = "33"  # yellow
_STATUS_WIDTH = len("IN_PROGRESS")
_FALLBACK_COLUMNS = 100


class View(Protocol):
    def show(self, progress: Progress) -> None:
        """Show a step of the check (not the last)."""

    def end(self, last: Progress | None) -> None:
        """Show the end of the check; None if it was interrupted."""


def make_view(
    out: TextIO,
    *,
    output: str,
    wait: bool,
    timeout: float,
    ids: int,
    env: Mapping[str, str] = os.environ,
) -> View:
    """The view for ``--output`` and what ``out`` is: a terminal or not."""
    if output == "json":
        return JsonView(out)
    terminal = _is_terminal(out) and env.get("TERM") != "dumb"
    colour = terminal and not env.get("NO_COLOR")
    # The view can only redraw lines that are still on the screen.
    if terminal and wait and ids + 1 < _rows(out):
        return LiveView(out, colour=colour, timeout=timeout)
    return PlainView(out, colour=colour, wait=wait, timeout=timeout)


class LiveView:
    """One line per id and a footer, redrawn in place."""

    def __init__(self, out: TextIO, *, colour: bool, timeout: float) -> None:
        self._out = out
        self._colour = colour
        self._timeout = timeout
        self._drawn = 0

    def show(self, progress: Progress) -> None:
        width = _columns(self._out) - 1
        id_width = max(len(state.id) for state in progress.states)
        lines = [row(s, id_width, width, self._colour) for s in progress.states]
        lines.append(_fit(footer(progress, self._timeout, wait=True), width))
        # Up over what was drawn before, then every line cleared and written anew.
        move = HIDE_CURSOR if not self._drawn else f"\r{CSI}{self._drawn}A"
        self._out.write(move + "".join(f"{CLEAR_LINE}{line}\n" for line in lines))
        self._out.flush()
        self._drawn = len(lines)

    def end(self, last: Progress | None) -> None:
        if last is not None:
            self.show(last)
        self._out.write(SHOW_CURSOR)
        self._out.flush()


class PlainView:
    """Lines without escape sequences (colour only on a terminal): a line per change."""

    def __init__(self, out: TextIO, *, colour: bool, wait: bool, timeout: float) -> None:
        self._out = out
        self._colour = colour
        self._wait = wait
        self._timeout = timeout

    def show(self, progress: Progress) -> None:
        if self._wait:
            self._write(progress, [s for s in progress.states if s.id in progress.changed])

    def end(self, last: Progress | None) -> None:
        if last is None:
            return
        if not self._wait:
            self._write(last, list(last.states))
            return
        self._out.write(footer(last, self._timeout, wait=True) + "\n")
        self._out.flush()

    def _write(self, progress: Progress, states: list[IdState]) -> None:
        id_width = max(len(state.id) for state in progress.states)
        self._out.write("".join(row(s, id_width, None, self._colour) + "\n" for s in states))
        self._out.flush()


class JsonView:
    """Nothing while the check runs; one document at its end."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, progress: Progress) -> None:
        pass

    def end(self, last: Progress | None) -> None:
        if last is not None:
            self._out.write(json.dumps(document(last), indent=2, ensure_ascii=False) + "\n")
            self._out.flush()


def document(last: Progress) -> dict[str, Any]:
    """The JSON document of a check's end."""
    outcome = last.outcome or Outcome.UNFINISHED
    return {
        "outcome": outcome.label,
        "exit_code": outcome.value,
        "elapsed_seconds": round(last.elapsed, 3),
        "imports": [_import_document(state) for state in last.states],
    }


def _import_document(state: IdState) -> dict[str, Any]:
    info, error = state.info, state.error
    return {
        "id": state.id,
        "status": None if info is None else info.status,
        "type": None if info is None else info.type,
        "message": None if info is None else info.message,
        "final": state.final,
        "error": None
        if error is None
        else {"reason": error.reason, "code": error.code, "detail": error.detail},
    }


def row(state: IdState, id_width: int, width: int | None, colour: bool) -> str:
    """One id's line: id, status, then type and message or the API's error."""
    status = "-" if state.status is None else one_line(state.status)
    head = f"{state.id.ljust(id_width)}  "
    line = _fit(f"{head}{status.ljust(_STATUS_WIDTH)}  {_detail(state)}".rstrip(), width)
    if not colour:
        return line
    code = _colour_of(state)
    start, end = len(head), len(head) + len(status)
    if code is None or len(line) < end:
        return line
    return f"{line[:start]}{CSI}{code}m{line[start:end]}{_RESET}{line[end:]}"


def _detail(state: IdState) -> str:
    if state.error is not None:
        return one_line(f"API error: {state.error.reason}: {state.error.detail}")
    if state.info is None:
        return ""
    parts = [state.info.type, state.info.message]
    if state.gave_up:
        parts.append("(the cluster does not know this id)")
    return "  ".join(one_line(part) for part in parts if part.strip())


def _colour_of(state: IdState) -> str | None:
    if state.error is not None:
        return _COLOURS["ERROR"]
    if state.status is None:
        return None
    return _COLOURS.get(state.status, _ON_THE_WAY)


def footer(progress: Progress, timeout: float, *, wait: bool) -> str:
    """The line under the ids: how long so far, or how the check ended."""
    total = len(progress.states)
    if progress.outcome is None:
        return (
            f"waiting {duration(progress.elapsed)} of {duration(timeout)}: "
            f"{progress.settled} of {total} settled"
        )
    counted = dict.fromkeys(Outcome, 0)
    for state in progress.states:
        counted[state.verdict] += 1
    after = f"after {duration(progress.elapsed)}"
    if progress.outcome is Outcome.SUCCEEDED:
        return f"succeeded: {total} of {total} SUCCESS {after}"
    if progress.outcome is Outcome.FAILED:
        return f"failed: {counted[Outcome.FAILED]} of {total} failed, aborted or unknown {after}"
    if progress.outcome is Outcome.API_FAILING:
        return f"API failing: no status for {counted[Outcome.API_FAILING]} of {total} {after}"
    still = f"{counted[Outcome.UNFINISHED]} of {total} still on their way"
    return f"timed out {after}: {still}" if wait else f"unfinished: {still}"


def duration(seconds: float) -> str:
    """Seconds in Prometheus' duration syntax, to the second: ``1h2m3s``, ``0s``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def _fit(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` terminal cells: a line that wraps breaks the redraw."""
    if width is None:
        return text
    used = 0
    for index, char in enumerate(text):
        used += _cells(char)
        if used > width:
            return text[:index]
    return text


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or _FALLBACK_COLUMNS
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_COLUMNS


def _rows(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).lines or 24
    except (AttributeError, ValueError, OSError):
        return 24
