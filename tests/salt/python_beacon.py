"""Run Salt's own Python beacons the way salt-minion does, for conformance tests.

    <venv>/bin/python tests/salt/python_beacon.py --config-dir DIR [--id ID]
        [--runs N] [--pace] [--between-runs CMD] [--no-grains] [--log-level LEVEL]

Reads the minion configuration DIR/minion (+ DIR/minion.d/*.conf, through
Salt's default_include) with salt.config.minion_config, redirects every path
Salt could write to (cachedir, pki_dir, sock_dir, log files, pidfile,
extension_modules) into a temporary directory that is removed on exit, and
builds the beacon machinery as salt.minion.Minion does:

    opts["grains"] = salt.loader.grains(opts)        (--no-grains: {})
    opts["pillar"] = {}                              (no master)
    utils     = salt.loader.utils(opts)
    functions = salt.loader.minion_mods(opts, utils=utils)   (lazy: cheap)
    beacons   = salt.beacons.Beacon(opts, functions)

Then, N times (one minion loop iteration each), like Minion.process_beacons:

    conf   = functions["config.merge"]("beacons", opts["beacons"], omit_opts=True)
    events = beacons.process(conf, opts["grains"])

`interval` is counted in loop iterations of `loop_interval` seconds, exactly as
in Salt; by default the runs follow each other immediately, --pace sleeps
loop_interval seconds between runs (for beacons that look at wall time).
--between-runs CMD runs the shell command CMD before every run but the first
(before the --pace sleep), so a test can make a change the beacon must see
between its silent first run and the next; CMD must succeed.

Each returned event is printed as one JSON line, in order:

    {"tag": "salt/beacon/<id>/<name>/...", "data": {..., "id": ..., "_stamp": ...},
     "beacon_name": "<module>", "run": <0-based run>}

plus "error" when the beacon raised (Salt then sends an empty data dict).
"_stamp" is added as the master's event bus does (salt.utils.event.SaltEvent
fire_event): datetime.utcnow().isoformat() on 3006/3007, and the timezone-aware
datetime.now(timezone.utc).isoformat() on 3008. Timings go to stderr.
"""

import argparse
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

# This file's directory is sys.path[0]; keep it from shadowing anything.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

# Paths salt.config resolves for a minion; all are pointed into the temp dir.
REDIRECTED = {
    "cachedir": "cache",
    "pki_dir": "pki",
    "sock_dir": "run",
    "log_file": "log/minion",
    "key_logfile": "log/key",
    "pidfile": "run/salt-minion.pid",
    "extension_modules": "cache/extmods",
}


def jsonable(value):
    if isinstance(value, dict):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def event_stamp(salt_major):
    if salt_major >= 3008:
        return datetime.datetime.now(datetime.timezone.utc).isoformat()
    return datetime.datetime.utcnow().isoformat()  # what 3006/3007 do


def load_opts(config_dir, minion_id, tmp):
    import salt.config
    import salt.syspaths

    conf_file = os.path.join(config_dir, "minion")
    if not os.path.isfile(conf_file):
        # minion_config tolerates a missing file; a test almost certainly did not mean that
        raise SystemExit(f"python_beacon.py: {conf_file} not found")
    defaults = salt.config.DEFAULT_MINION_OPTS.copy()
    defaults["root_dir"] = tmp
    for key, rel in REDIRECTED.items():
        defaults[key] = os.path.join(tmp, rel)
    defaults["conf_file"] = conf_file
    opts = salt.config.minion_config(
        conf_file,
        env_var="BEACOND_UNUSED_SALT_MINION_CONFIG",
        defaults=defaults,
        cache_minion_id=False,
        minion_id=minion_id,
    )
    # Whatever the config file says, nothing is written outside tmp.
    opts["root_dir"] = tmp
    for key, rel in REDIRECTED.items():
        opts[key] = os.path.join(tmp, rel)
    opts["grains_cache"] = False
    opts["file_client"] = "local"
    opts["master_type"] = "disable"
    opts["pillar"] = {}
    if minion_id:
        opts["id"] = minion_id
    opts.setdefault("beacons", {})
    for d in ("cache", "cache/extmods", "pki", "run", "log"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    return opts


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python_beacon.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-dir", required=True, help="dir with 'minion' (+ minion.d/)")
    parser.add_argument("--id", help="minion id (default: from the config, else Salt's get_id)")
    parser.add_argument("--runs", type=int, default=1, help="loop iterations (default 1)")
    parser.add_argument("--pace", action="store_true", help="sleep loop_interval between runs")
    parser.add_argument(
        "--between-runs",
        metavar="CMD",
        help="shell command run before every run but the first (must succeed)",
    )
    parser.add_argument(
        "--no-grains",
        action="store_true",
        help="skip salt.loader.grains (faster; __grains__ is then {})",
    )
    parser.add_argument("--log-level", default="warning", help="stderr log level")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="[%(levelname)-8s] %(name)s: %(message)s",
    )

    t0 = time.monotonic()
    import salt.beacons
    import salt.loader
    import salt.version

    salt_major = salt.version.__saltstack_version__.major
    tmp = tempfile.mkdtemp(prefix="beacond-pybeacon-")
    timings = {}
    try:
        timings["import"] = time.monotonic() - t0
        t = time.monotonic()
        opts = load_opts(os.path.abspath(args.config_dir), args.id, tmp)
        timings["config"] = time.monotonic() - t

        t = time.monotonic()
        opts["grains"] = {} if args.no_grains else salt.loader.grains(opts)
        timings["grains"] = time.monotonic() - t

        t = time.monotonic()
        context = {}
        utils = salt.loader.utils(opts, context=context)
        functions = salt.loader.minion_mods(opts, utils=utils, context=context)
        beacons = salt.beacons.Beacon(opts, functions)
        timings["loaders"] = time.monotonic() - t

        out = sys.stdout
        t = time.monotonic()
        for run in range(args.runs):
            if run and args.between_runs:
                subprocess.run(args.between_runs, shell=True, check=True)
            if run and args.pace:
                time.sleep(float(opts.get("loop_interval", 1)))
            # Minion.process_beacons: re-read the (pillar/grains merged) config
            b_conf = functions["config.merge"]("beacons", opts["beacons"], omit_opts=True)
            events = beacons.process(b_conf, opts["grains"]) if b_conf else []
            for event in events or []:
                data = event.get("data")
                data = dict(data) if isinstance(data, dict) else {"data": data}
                data["_stamp"] = event_stamp(salt_major)
                line = {
                    "tag": event.get("tag"),
                    "data": jsonable(data),
                    "beacon_name": event.get("beacon_name"),
                    "run": run,
                }
                if "error" in event:
                    line["error"] = jsonable(event["error"])
                out.write(json.dumps(line) + "\n")
            out.flush()
        timings["process"] = time.monotonic() - t
        # No beacons.close_beacons(): salt-minion calls it only on a refresh, and
        # probing "<name>.close" of a beacon without one makes the lazy loader
        # import every beacon module (seconds). Process exit releases resources.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = time.monotonic() - t0
    print(
        "python_beacon.py: salt %s, %s"
        % (
            salt.version.__version__,
            ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()),
        ),
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
