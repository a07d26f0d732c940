"""The per-import series of a scrape, and their lines of text, kept for final imports.

A final import's series never change until it is retired, so its lines are rendered
once: kept as their parts (the id as a label value, and the rest of each line, formatted
and escaped), they are only joined again at each scrape. Live imports are rendered anew
every time. The lines are those ``prometheus_client`` writes for the same samples, in
the text format 0.0.4 and in OpenMetrics alike (the exposition checks that it does before
it uses them); any other reader of the families gets their samples, built when asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _untyped_float_text

from elevate_import_exporter.core.model import DOCUMENTED_STATUSES
from elevate_import_exporter.core.state import ImportState

T = TypeVar("T")

# Imports per run of pieces: a compressed answer is built a run at a time.
RUN = 1000
# Distinct (type, status) and (type, message) parts kept for sharing among imports.
MAX_SHARED_PARTS = 512


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    documentation: str
    labels: tuple[str, ...]


STATUS = Family(
    "elevate_import_status",
    "Status of the import as the API reports it: 1 for the current status, "
    "0 for the other documented ones.",
    ("id", "type", "status"),
)
INFO = Family(
    "elevate_import_info",
    "Always 1; the type and the API's last message (at most 200 characters).",
    ("id", "type", "message"),
)
FIRST_SEEN = Family(
    "elevate_import_first_seen_timestamp_seconds",
    "When the exporter began tracking the import id.",
    ("id",),
)
LAST_CHANGE = Family(
    "elevate_import_last_status_change_timestamp_seconds",
    "When the exporter first saw the import's current status.",
    ("id",),
)
POLL_SUCCESS = Family(
    "elevate_import_poll_success",
    "1 if the latest status query for the id returned valid import information "
    "(a final status held from earlier counts), else 0.",
    ("id",),
)
FAMILIES = (STATUS, INFO, FIRST_SEEN, LAST_CHANGE, POLL_SUCCESS)

# A value as prometheus_client writes it (Go's float formatting).
_float_text: Callable[[float], str] = _untyped_float_text
_ONE, _ZERO = _float_text(1.0), _float_text(0.0)


def _head(family: Family) -> bytes:
    return f'{family.name}{{id="'.encode()


_INFO_HEAD, _FIRST_SEEN_HEAD = _head(INFO), _head(FIRST_SEEN)
_LAST_CHANGE_HEAD, _POLL_HEAD = _head(LAST_CHANGE), _head(POLL_SUCCESS)
_POLL_TAILS = {True: f'"}} {_ONE}\n'.encode(), False: f'"}} {_ZERO}\n'.encode()}


def _label(value: str) -> str:
    """A label value as prometheus_client escapes it, in either format."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Lines:
    """One import's lines, as parts; every label sorts after ``id``, which comes first."""

    __slots__ = ("first_seen", "id", "info", "last_change", "state", "status")

    def __init__(self, state: ImportState, shared: _SharedParts) -> None:
        self.state = state
        self.id = _label(state.id).encode()  # the parts are joined around it
        info = state.info
        self.status: tuple[bytes, ...] | None = None
        self.info: bytes | None = None
        self.last_change: bytes | None = None
        if info is not None:
            kind = _label(info.type)
            self.status = shared.get(("status", kind, info.status), _status_parts)
            self.info = shared.get(("info", kind, info.message), _info_tail)
            if state.status_since is not None:
                self.last_change = f'"}} {_float_text(state.status_since)}\n'.encode()
        self.first_seen = f'"}} {_float_text(state.first_seen)}\n'.encode()


def _status_parts(key: tuple[str, str, str]) -> tuple[bytes, ...]:
    """The status lines of an import, without its id: joined with the id, they are whole."""
    _, kind, current = key
    statuses: tuple[str, ...] = DOCUMENTED_STATUSES
    if current not in statuses:
        statuses = (*statuses, current)
    head = _head(STATUS).decode()
    rests = [
        f'",status="{_label(s)}",type="{kind}"}} {_ONE if s == current else _ZERO}\n'
        for s in statuses
    ]
    return (head.encode(), *(f"{rest}{head}".encode() for rest in rests[:-1]), rests[-1].encode())


def _info_tail(key: tuple[str, str, str]) -> bytes:
    _, kind, message = key
    return f'",message="{_label(message)}",type="{kind}"}} {_ONE}\n'.encode()


class _SharedParts:
    """Parts common to many imports (all those of one type and status), made once."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str, str], object] = {}

    def get(self, key: tuple[str, str, str], make: Callable[[tuple[str, str, str]], T]) -> T:
        part = self._parts.get(key)
        if part is None:
            if len(self._parts) >= MAX_SHARED_PARTS:
                self._parts.clear()  # the imports that hold parts keep them
            part = self._parts[key] = make(key)
        return part  # type: ignore[return-value]


def _renders_alike(a: ImportState, b: ImportState) -> bool:
    return (
        a.id == b.id
        and a.first_seen == b.first_seen
        and a.info == b.info
        and a.status_since == b.status_since
        and a.poll_success == b.poll_success
    )


class FinalLines:
    """The kept lines of final imports, for the ids of the latest snapshot only.

    ``formatted`` counts imports rendered from their state: once for a final import
    while its state stands, at every scrape for a live one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, _Lines] = {}
        self._shared = _SharedParts()
        self.formatted = 0

    @property
    def kept_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._kept)

    def lines(self, imports: Mapping[str, ImportState]) -> list[_Lines]:
        """Each import's lines, in order; final ones kept for the next scrape, and only
        those of ``imports``: a retired import's lines go with it."""
        with self._lock:
            kept, shared = self._kept, self._shared
            result: list[_Lines] = []
            finals = formatted = 0
            for import_id, state in imports.items():
                lines = kept.get(import_id)
                if lines is None or (
                    lines.state is not state and not _renders_alike(lines.state, state)
                ):
                    lines = _Lines(state, shared)
                    formatted += 1
                    if state.final:
                        kept[import_id] = lines
                    else:
                        kept.pop(import_id, None)
                finals += state.final
                result.append(lines)
            if finals != len(kept):  # some kept ones have left
                self._kept = {i: kept[i] for i, s in imports.items() if s.final and i in kept}
            self.formatted += formatted
        return result


def _status_pieces(lines: list[_Lines], out: list[bytes]) -> None:
    for one in lines:
        if one.status is not None:
            out.append(one.id.join(one.status))


def _info_pieces(lines: list[_Lines], out: list[bytes]) -> None:
    for one in lines:
        if one.info is not None:
            out += (_INFO_HEAD, one.id, one.info)


def _first_seen_pieces(lines: list[_Lines], out: list[bytes]) -> None:
    for one in lines:
        out += (_FIRST_SEEN_HEAD, one.id, one.first_seen)


def _last_change_pieces(lines: list[_Lines], out: list[bytes]) -> None:
    for one in lines:
        if one.last_change is not None:
            out += (_LAST_CHANGE_HEAD, one.id, one.last_change)


def _poll_pieces(lines: list[_Lines], out: list[bytes]) -> None:
    tails = _POLL_TAILS
    for one in lines:
        out += (_POLL_HEAD, one.id, tails[one.state.poll_success])


_PIECES: dict[Family, Callable[[list[_Lines], list[bytes]], None]] = {
    STATUS: _status_pieces,
    INFO: _info_pieces,
    FIRST_SEEN: _first_seen_pieces,
    LAST_CHANGE: _last_change_pieces,
    POLL_SUCCESS: _poll_pieces,
}


class Series:
    """The per-import series of one snapshot; its lines are looked up once, when needed."""

    def __init__(self, imports: Mapping[str, ImportState], final: FinalLines) -> None:
        self.imports = imports
        self._final = final
        self._lock = threading.Lock()
        self._lines: list[_Lines] | None = None

    def lines(self) -> list[_Lines]:
        with self._lock:
            if self._lines is None:
                self._lines = self._final.lines(self.imports)
            return self._lines

    def runs(self, family: Family) -> Iterator[list[bytes]]:
        """The family's sample lines, as runs of pieces to join, in the order of the ids."""
        lines, pieces = self.lines(), _PIECES[family]
        for start in range(0, len(lines), RUN):
            out: list[bytes] = []
            pieces(lines[start : start + RUN], out)
            yield out

    def has_samples(self, family: Family) -> bool:
        if family in (FIRST_SEEN, POLL_SUCCESS):
            return bool(self.imports)
        if family is LAST_CHANGE:
            return any(one.last_change is not None for one in self.lines())
        return any(state.info is not None for state in self.imports.values())

    def samples(self, family: Family) -> list[Sample]:
        return list(_SAMPLES[family](self.imports.values()))


def _status_samples(states: Iterable[ImportState]) -> Iterator[Sample]:
    name = STATUS.name
    for state in states:
        if (current := state.info) is None:
            continue
        for documented in DOCUMENTED_STATUSES:
            labels = {"id": state.id, "type": current.type, "status": documented}
            yield Sample(name, labels, 1.0 if documented == current.status else 0.0)
        if current.status not in DOCUMENTED_STATUSES:
            labels = {"id": state.id, "type": current.type, "status": current.status}
            yield Sample(name, labels, 1.0)


def _info_samples(states: Iterable[ImportState]) -> Iterator[Sample]:
    for state in states:
        if (current := state.info) is not None:
            labels = {"id": state.id, "type": current.type, "message": current.message}
            yield Sample(INFO.name, labels, 1.0)


def _first_seen_samples(states: Iterable[ImportState]) -> Iterator[Sample]:
    for state in states:
        yield Sample(FIRST_SEEN.name, {"id": state.id}, state.first_seen)


def _last_change_samples(states: Iterable[ImportState]) -> Iterator[Sample]:
    for state in states:
        if state.info is not None and state.status_since is not None:
            yield Sample(LAST_CHANGE.name, {"id": state.id}, state.status_since)


def _poll_samples(states: Iterable[ImportState]) -> Iterator[Sample]:
    for state in states:
        yield Sample(POLL_SUCCESS.name, {"id": state.id}, 1.0 if state.poll_success else 0.0)


_SAMPLES: dict[Family, Callable[[Iterable[ImportState]], Iterator[Sample]]] = {
    STATUS: _status_samples,
    INFO: _info_samples,
    FIRST_SEEN: _first_seen_samples,
    LAST_CHANGE: _last_change_samples,
    POLL_SUCCESS: _poll_samples,
}


LABELS_NAME = "elevate_import_labels"
LABELS_HELP = (
    "Always 1; the allowlisted labels (--imports.metric-labels) of each tracked import, "
    "for group_left in alerts: value '' when the import has none, 'other' past "
    "--imports.metric-labels-max-values."
)


def labels_family(names: tuple[str, ...]) -> Family:
    """The info series' family for the allowlisted ``names``; its labels in sorted order,
    as prometheus_client writes them."""
    return Family(LABELS_NAME, LABELS_HELP, tuple(sorted(("id", *names))))


class LabelSeries:
    """The info series of one snapshot: a line per tracked import, built from parts shared
    by every import of the same values (few), around its id."""

    def __init__(
        self,
        family: Family,
        names: tuple[str, ...],
        ids: Iterable[str],
        values_of: Mapping[str, tuple[str, ...]],
        blank: tuple[str, ...],
    ) -> None:
        self._family = family
        self._names = names
        self._ids = list(ids)
        self._values_of = values_of
        self._blank = blank

    def _parts(self, values: tuple[str, ...]) -> tuple[bytes, bytes]:
        given = dict(zip(self._names, values, strict=True))
        before = [f'{n}="{_label(given[n])}"' for n in self._family.labels if n < "id"]
        after = [f'{n}="{_label(given[n])}"' for n in self._family.labels if n > "id"]
        head = f'{self._family.name}{{{"".join(b + "," for b in before)}id="'
        tail = f'"{"".join("," + a for a in after)}}} {_ONE}\n'
        return head.encode(), tail.encode()

    def runs(self, family: Family) -> Iterator[list[bytes]]:
        parts: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        values_of, blank = self._values_of, self._blank
        for start in range(0, len(self._ids), RUN):
            out: list[bytes] = []
            for import_id in self._ids[start : start + RUN]:
                values = values_of.get(import_id, blank)
                pair = parts.get(values)
                if pair is None:
                    pair = parts[values] = self._parts(values)
                out += (pair[0], _label(import_id).encode(), pair[1])
            yield out

    def has_samples(self, family: Family) -> bool:
        return bool(self._ids)

    def samples(self, family: Family) -> list[Sample]:
        out = []
        for import_id in self._ids:
            values = self._values_of.get(import_id, self._blank)
            labels = {"id": import_id, **dict(zip(self._names, values, strict=True))}
            out.append(Sample(family.name, {n: labels[n] for n in family.labels}, 1.0))
        return out


class _Rows(Protocol):
    def runs(self, family: Family) -> Iterator[list[bytes]]: ...

    def has_samples(self, family: Family) -> bool: ...

    def samples(self, family: Family) -> list[Sample]: ...


class ImportFamily(Metric):
    """A per-import gauge family of one scrape. The exposition writes it from
    :meth:`runs`; whoever reads ``samples`` gets them, built on first use."""

    def __init__(self, family: Family, series: _Rows) -> None:
        self._built: list[Sample] | None = None
        super().__init__(family.name, family.documentation, "gauge")
        self._built = None  # the constructor's empty list: the samples come from the series
        self.family = family
        self._series = series

    @property
    def samples(self) -> list[Sample]:
        if self._built is None:
            self._built = self._series.samples(self.family)
        return self._built

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._built = value

    def runs(self) -> Iterator[list[bytes]]:
        """The sample lines, without HELP and TYPE, as runs of pieces to join."""
        return self._series.runs(self.family)

    def _restricted_metric(self, names: Iterable[str]) -> Metric | None:
        # As Metric's: all of a gauge's samples carry its name; a family without any is
        # left out. Without building the samples.
        if self.name in names and self._series.has_samples(self.family):
            return self
        return None


def import_families(imports: Mapping[str, ImportState], final: FinalLines) -> list[ImportFamily]:
    series = Series(imports, final)
    return [ImportFamily(family, series) for family in FAMILIES]
