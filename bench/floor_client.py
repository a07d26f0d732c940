"""The floor for CPU per status request: a plain single-threaded ``requests`` loop.

Run as its own process by bench.py; asks the simulator for the same ids the
exporter asks for and prints its own CPU time for the loop as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import requests
from procs import cpu_seconds, generated_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--imports", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()
    prefix = f"{args.base_url}/api/v2/import/status/"
    headers = {"Api-Key": os.environ["ELEVATE_API_KEY"], "Accept": "application/json"}
    ids = generated_ids(args.imports)
    session = requests.Session()
    # One request first, so connecting and the first-use imports of requests are not counted.
    session.get(prefix + ids[0], headers=headers, timeout=10).raise_for_status()
    pid = os.getpid()
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    sent = 0
    while sent < args.requests:
        import_id = ids[sent % len(ids)]
        session.get(prefix + import_id, headers=headers, timeout=10).raise_for_status()
        sent += 1
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    print(json.dumps({"requests": sent, "cpu_seconds": cpu, "wall_seconds": wall}))


if __name__ == "__main__":
    main()
