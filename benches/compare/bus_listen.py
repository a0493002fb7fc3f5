"""Print every salt/beacon/ event of a test master's bus with its receipt time.

Run with a Salt venv's python:  bus_listen.py --root MASTER_ROOT

Reuses tests/salt/master.py's helpers (load the master's opts, subscribe, prove the
subscription with a round trip). Prints "listening" on stderr once subscribed, then one
line per event on stdout:  <unix time of receipt> <TAB> <tag> <TAB> <data as JSON>
(the data is only dumped for tags matching --data-for, a substring; others get "{}", so that
counting a flood is not bounded by JSON encoding in this process).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "harness_master", os.path.join(HERE, "..", "..", "tests", "salt", "master.py")
)
master = importlib.util.module_from_spec(spec)
spec.loader.exec_module(master)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--prefix", default="salt/beacon/")
    p.add_argument("--data-for", action="append", default=[])
    args = p.parse_args()
    layout = master.Layout(args.root)
    opts = master.load_master_opts(layout)
    event = master.master_event(opts, listen=True)
    if not master.event_roundtrip(event, time.monotonic() + 60):
        print("could not subscribe to the master's event bus", file=sys.stderr)
        return 1
    print("listening", file=sys.stderr, flush=True)
    out = sys.stdout
    try:
        while True:
            ev = event.get_event(wait=1, tag="", full=True, match_type="startswith")
            if not ev:
                continue
            now = time.time()
            tag = ev.get("tag") or ""
            if isinstance(tag, bytes):
                tag = tag.decode("utf-8", errors="replace")
            if not tag.startswith(args.prefix):
                continue
            data = "{}"
            if any(s in tag for s in args.data_for):
                data = json.dumps(master.jsonable(ev.get("data")))
            out.write(f"{now:.6f}\t{tag}\t{data}\n")
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
