"""What the simulated imports do: scripted steps, and where the scripts come from.

An import's script is a list of steps; each step is a status the import answers with,
held for a time or for a number of answered queries. Scripts come from code
(``demo_imports``, ``generated_imports``) or from a scenario file (``load_scenario``).

A scenario file is UTF-8 JSON: a list of imports, each an object with these keys.

``id``
    Required: the import id, a non-empty string, unique within the file. Ids the file
    does not name are answered ``NOT_FOUND``.
``type``
    Optional: the ``type`` field of the answers, a string. Left out, it is
    ``"PRODUCTS"``; ``null`` leaves the field out of the answers.
``steps``
    Required: a non-empty list of steps, each an object with these keys.

    ``status``
        Required: the ``status`` field of the answers, a non-empty string. It need not
        be one Elevate documents, so the exporter's handling of new ones can be tried.
    ``seconds``
        Optional: how long the step holds, a number > 0. The next step begins when
        these seconds have passed, whether or not anyone asked in between.
    ``queries``
        Optional: how many status queries the step answers, an integer > 0. The next
        step begins as the last of them is answered; queries answered with an error
        (a simulated failure, a wrong key) do not count.
    ``message``
        Optional: the ``message`` field of the answers, a string. Left out, the
        answers have no ``message`` field.

    ``seconds`` and ``queries`` are exclusive. A step with neither holds forever, and
    so does the last step, whatever it says. The first step of a script given to the
    ``Simulator`` begins when it starts serving; of one added later, when it is added.

Any other key, in an import or in a step, is an error, and so is a wrong value: each
raises a ``ScenarioError`` naming the file, the import and the step.

The same file serves every API flavour. For the Admin API (``admin-v4``, ``admin-v3``)
each id must be 1 to 64 decimal digits, as the Admin API's ids are numbers; the answers
carry it as a JSON number (exact beyond 2^53), say ``reason`` where v2 says ``message``
(``null`` for a step without one), and have no ``type``, whatever the file says.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elevate_import_exporter.core.model import id_rule

# Shown by ``simulate --help``: the format above, short enough for a terminal.
SCENARIO_FORMAT = """\
A scenario file is a JSON list of imports, for example:
  [{"id": "1001", "steps": [{"status": "WAITING", "seconds": 5},
                            {"status": "IN_PROGRESS", "queries": 3},
                            {"status": "FAILURE", "message": "No title"}]},
   {"id": "1002", "type": null, "steps": [{"status": "IN_PROGRESS"}]}]
id       required: a non-empty string, unique in the file; admin-*: digits
type     the answers' type ("PRODUCTS" if left out, null: none); admin-*: none
steps    required: a non-empty list of objects with these keys
  status   required: the status answered, a non-empty string
  seconds  hold the step this long (a number > 0), then go on
  queries  hold the step for this many answers (an integer > 0)
  message  the answers' message, a string; none if left out (admin-*: reason)
seconds and queries are exclusive; a step with neither, and the last step,
hold forever. Steps run from the start of serving. Unknown keys are errors;
other ids are NOT_FOUND. admin-*: with --api admin-v4/v3; ids go as numbers."""

# A 19-digit id that no demo import uses, so the simulator answers NOT_FOUND for it.
DEMO_UNKNOWN_ID = "9004417265813270626"


class ScenarioError(ValueError):
    """A scenario file or a scripted step is malformed; the message names the problem."""


def fits_api(import_id: str, api: str) -> bool:
    """Whether ``api`` can have an import of this id: the Admin API's ids are numbers."""
    return not api.startswith("admin-") or id_rule(api)[0](import_id)


def check_id(import_id: str, api: str) -> None:
    """Raise :class:`ScenarioError` for an id that ``api`` cannot have."""
    if not fits_api(import_id, api):
        raise ScenarioError(f"with the {api} API an id is {id_rule(api)[1]}, not {import_id!r}")


@dataclass(frozen=True)
class Step:
    """One status an import holds, for ``seconds`` or for ``queries`` answered queries."""

    status: str
    seconds: float | None = None
    queries: int | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, str) or not self.status:
            raise ScenarioError(f"status must be a non-empty string, got {self.status!r}")
        if self.seconds is not None and self.queries is not None:
            raise ScenarioError(f"step {self.status}: give seconds or queries, not both")
        seconds: Any = self.seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ScenarioError(
                f"step {self.status}: seconds must be a number > 0, got {seconds!r}"
            )
        queries: Any = self.queries
        if queries is not None and (
            isinstance(queries, bool) or not isinstance(queries, int) or queries <= 0
        ):
            raise ScenarioError(
                f"step {self.status}: queries must be an integer > 0, got {queries!r}"
            )
        if self.message is not None and not isinstance(self.message, str):
            raise ScenarioError(f"step {self.status}: message must be a string")


@dataclass(frozen=True)
class ScriptedImport:
    """An import id and the steps it goes through; the last step holds forever."""

    id: str
    steps: tuple[Step, ...]
    type: str | None = "PRODUCTS"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ScenarioError(f"import id must be a non-empty string, got {self.id!r}")
        # Callers often write a list; keep the value hashable and immutable anyway.
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ScenarioError(f"import {self.id}: steps must not be empty")
        if self.type is not None and not isinstance(self.type, str):
            raise ScenarioError(f"import {self.id}: type must be a string or null")


class _Progress:
    """Where one import stands in its script; advanced lazily when it is queried."""

    __slots__ = ("answered", "began", "imp", "index")

    def __init__(self, imp: ScriptedImport, began: float | None) -> None:
        self.imp = imp
        self.index = 0
        # None: the step began at the simulator's epoch (construction, then start()).
        self.began = began
        self.answered = 0

    def answer(self, now: float, epoch: float) -> Step:
        """The step in force now, counting this query as answered by it."""
        steps = self.imp.steps
        last = len(steps) - 1
        began = epoch if self.began is None else self.began
        index = self.index
        while index < last:
            seconds = steps[index].seconds
            if seconds is None or now < began + seconds:
                break
            # The next step began when this one ran out, not when we noticed.
            began += seconds
            index += 1
            self.answered = 0
        step = steps[index]
        self.answered += 1
        if index < last and step.queries is not None and self.answered >= step.queries:
            index += 1
            began = now
            self.answered = 0
        self.index = index
        self.began = began
        return step


def demo_imports() -> list[ScriptedImport]:
    """The imports the ``demo`` command shows: each way an import can go, within ~20 s."""
    return [
        ScriptedImport(
            "5537431447739019570",
            (Step("WAITING", seconds=4), Step("IN_PROGRESS", seconds=12), Step("SUCCESS")),
            type="PRODUCTS",
        ),
        ScriptedImport(
            "5300580843122327405",
            (
                Step("WAITING", seconds=2),
                Step("IN_PROGRESS", seconds=10),
                Step("FAILURE", message="Import failed: 3 products lack a title"),
            ),
            type="PRODUCTS",
        ),
        ScriptedImport(
            "6181926371846532231",
            (Step("WAITING", seconds=3), Step("BLOCKED", seconds=5), Step("IN_PROGRESS")),
            type="SYNONYMS",
        ),
        ScriptedImport(
            "4862914472603840115",
            (Step("IN_PROGRESS", seconds=6), Step("ABORTED")),
            type="ADS",
        ),
        ScriptedImport(
            "7215570016204483911",
            (Step("IN_PROGRESS", seconds=3), Step("SUCCESS")),
            type="PANELS",
        ),
    ]


def generated_imports(
    n: int, status: str = "IN_PROGRESS", type: str = "PRODUCTS"
) -> list[ScriptedImport]:
    """``n`` imports (ids 7000000000000000000, ...+1, ...) that hold ``status`` forever."""
    if n < 0:
        raise ScenarioError(f"the number of imports must be >= 0, got {n}")
    step = (Step(status),)
    return [ScriptedImport(str(7_000_000_000_000_000_000 + i), step, type) for i in range(n)]


_IMPORT_KEYS = frozenset({"id", "type", "steps"})
_STEP_KEYS = frozenset({"status", "seconds", "queries", "message"})


def load_scenario(path: Path, api: str = "web-v2") -> list[ScriptedImport]:
    """Read a JSON scenario file: a list of ``{"id", "type", "steps": [...]}`` objects.

    ``api`` is the flavour the imports will be served in; it decides which ids are valid.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: the scenario is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, list):
        raise ScenarioError(f"{path}: the scenario must be a JSON list of imports")
    imports: list[ScriptedImport] = []
    seen: set[str] = set()
    for number, entry in enumerate(doc, start=1):
        imp = _parse_import(f"{path}: import #{number}", entry)
        try:
            check_id(imp.id, api)
        except ScenarioError as exc:
            raise ScenarioError(f"{path}: import #{number}: {exc}") from None
        if imp.id in seen:
            raise ScenarioError(f"{path}: import #{number}: duplicate id {imp.id}")
        seen.add(imp.id)
        imports.append(imp)
    return imports


def _parse_import(where: str, entry: object) -> ScriptedImport:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: must be a JSON object")
    unknown = sorted(set(entry) - _IMPORT_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r}")
    import_id = entry.get("id")
    if not isinstance(import_id, str) or not import_id:
        raise ScenarioError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} (id {import_id})"
    import_type = entry.get("type", "PRODUCTS")
    if import_type is not None and not isinstance(import_type, str):
        raise ScenarioError(f"{where}: 'type' must be a string or null")
    raw_steps = entry.get("steps")
    if not isinstance(raw_steps, list):
        raise ScenarioError(f"{where}: 'steps' must be a list")
    if not raw_steps:
        raise ScenarioError(f"{where}: 'steps' must not be empty")
    steps = tuple(
        _parse_step(f"{where} step #{number}", raw) for number, raw in enumerate(raw_steps, 1)
    )
    return ScriptedImport(import_id, steps, import_type)


def _parse_step(where: str, raw: object) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r}")
    if "status" not in raw:
        raise ScenarioError(f"{where}: 'status' is missing")
    try:
        return Step(
            status=raw["status"],
            seconds=raw.get("seconds"),
            queries=raw.get("queries"),
            message=raw.get("message"),
        )
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
