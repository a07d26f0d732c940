"""How many malloc arenas the process may use (glibc only).

glibc gives threads their own arenas, up to eight per core. The exporter runs some
hundred long-lived threads (poll workers, HTTP and proxy handlers) that all allocate:
registration bodies, answers, records and rendered lines end up spread over every arena,
and each arena keeps its own partly used pages. At 10,000 tracked ids that reached the
exporter through registration and the proxy, this was 75 MB of arenas against 40 MB for
the same ids from a file (bench/mixed_memory.py). Python's own small-object allocator
and the GIL make more arenas buy almost nothing in speed here.
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
ARENAS = 2
ENV = "MALLOC_ARENA_MAX"


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap malloc's arenas at ``arenas``; True if the C library took it.

    Effective only before a second thread first allocates: call it first thing. An
    operator's own ``MALLOC_ARENA_MAX`` wins. Elsewhere than glibc (musl, macOS) nothing
    happens.
    """
    if os.environ.get(ENV):
        return False
    try:
        # The symbols the process has loaded already, libc's among them: find_library
        # would run ldconfig or a compiler in a child process to find the file.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
