"""Run a throw-away salt-master for beacond's integration tests.

Run with the python of a venv made by tests/salt/setup.sh:

    <venv>/bin/python tests/salt/master.py SUBCOMMAND ...

Everything the master writes (config, keys, caches, sockets, logs, file_roots)
lives under --root DIR; the master binds only 127.0.0.1. Subcommands:

  start --root DIR --ret-port N --publish-port N [--no-auto-accept]
        [--reactor 'TAG_GLOB=SLS_PATH' ...] [--master-key-from DIR]
        [--worker-threads N] [--timeout S] [--owner-pid PID]
      Write DIR/etc/salt/master and start salt-master in the background (own
      process group). Waits until the request port accepts TCP connections,
      the publish port is open, an event fired on the master's event bus comes
      back, and (when reactors are configured) the reactor answers a probe.
      Prints "ready pid=<pid>" and exits 0; on failure exits 1 after printing
      the master log tail to stderr. Reusing a DIR keeps its keys (restart).
      --master-key-from copies master.pem/master.pub from DIR first.
      --owner-pid leaves a detached watchdog that stops the master when PID
      exits (so a killed test process does not leak its master).

  stop --root DIR [--timeout S]
      SIGTERM the master's process group, SIGKILL after S seconds (default 3;
      0 = SIGKILL at once), wait until its processes are gone and the request
      port is closed. (A graceful salt-master shutdown often takes 4-7 s
      because its Maintenance process ignores SIGTERM while loading modules;
      a master killed this way restarts fine from the same root.)

  events --root DIR [--tag-prefix PREFIX] [--count N] [--timeout S]
         [--owner-pid PID]
      Subscribe to the master's event bus; print "listening" on stderr once
      subscribed (verified by a round trip), then one JSON line
      {"tag": ..., "data": {...}} per event whose tag starts with PREFIX,
      flushed per line. Exits after N events (0 = unlimited) or S seconds
      (default 300; exit status 0 either way). Harness probe events
      (tags beacond/harness/...) are never printed. Exits early when
      --owner-pid exits.

  fire --root DIR --tag TAG [--data JSON]
      Fire one event on the master's event bus (like `salt-run event.send`
      but without loading the runner system).

  key-accept --root DIR --id MINION_ID    salt-key -a MINION_ID -y
  key-reject --root DIR --id MINION_ID    salt-key -r MINION_ID -y
  key-delete --root DIR --id MINION_ID    salt-key -d MINION_ID -y
  key-list --root DIR                     salt-key -L as JSON
      ({"minions": [...], "minions_pre": [...], "minions_rejected": [...],
        "minions_denied": [...]})

  genkey --out DIR
      Write a fresh master key pair DIR/master.pem + DIR/master.pub (for
      --master-key-from, e.g. to test key pinning with a different master).

  reactor-sls --out SLS --marker FILE
      Write a reactor SLS that appends one JSON line {"tag": ..., "data": ...}
      per event it reacts to into FILE, and create FILE empty (file.append
      needs an existing file): wait for FILE to become non-empty. Use it with
      start --reactor 'salt/beacon/*/NAME/*=SLS'.

Reactor recipe (works on 3006, 3007 and 3008, no minion needed): the reactor
calls the `salt.cmd` runner, which runs the `file.append` execution module on
the master:

    beacond_reactor_marker:
      runner.salt.cmd:
        - args:
          - fun: file.append
          - path: /path/to/marker
          - args:
            - {{ {"tag": tag, "data": data} | json | yaml_dquote }}

The marker file must exist beforehand (file.append does not create it). The
line appears well under a second after the event on an idle master (allow
~30 s in tests).
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

# This file's directory is sys.path[0]; keep it from shadowing anything.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

PROBE_PREFIX = "beacond/harness/"
REACTOR_PROBE_TAG = "beacond/harness/reactor-probe"
REACTOR_READY_TAG = "beacond/harness/reactor-ready"
STATE_FILE = "harness.json"
LOG_NOISE = ("[DEBUG", "[TRACE", "[PROFILE", "[GARBAGE")


# ---------------------------------------------------------------------------
# layout


class Layout:
    """Paths of one master's root directory."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.conf_dir = os.path.join(self.root, "etc", "salt")
        self.conf_file = os.path.join(self.conf_dir, "master")
        self.pki_dir = os.path.join(self.conf_dir, "pki", "master")
        self.cachedir = os.path.join(self.root, "cache")
        self.sock_dir = os.path.join(self.root, "run")
        self.pidfile = os.path.join(self.root, "salt-master.pid")
        self.log_dir = os.path.join(self.root, "log")
        self.log_file = os.path.join(self.log_dir, "master")
        self.key_log_file = os.path.join(self.log_dir, "key")
        self.console_log = os.path.join(self.log_dir, "console")
        self.file_roots = os.path.join(self.root, "srv", "salt")
        self.pillar_roots = os.path.join(self.root, "srv", "pillar")
        self.reactor_dir = os.path.join(self.root, "srv", "reactor")
        self.state_file = os.path.join(self.root, STATE_FILE)

    def makedirs(self):
        for d in (
            self.conf_dir,
            self.pki_dir,
            self.cachedir,
            self.sock_dir,
            self.log_dir,
            self.file_roots,
            self.pillar_roots,
            self.reactor_dir,
        ):
            os.makedirs(d, exist_ok=True)

    def read_state(self):
        try:
            with open(self.state_file, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def write_state(self, state):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)


def venv_bin(name):
    """A console script of the venv whose python runs this file."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        die(f"{path} not found: run this script with a salt venv's python")
    return path


def die(msg, code=1):
    print(f"master.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def log_tail(layout, lines=60):
    out = []
    for path in (layout.console_log, layout.log_file):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read().splitlines()
        except OSError:
            continue
        if path == layout.log_file:
            # the log file is at debug level: keep INFO and above
            text = [l for l in text if not any(n in l for n in LOG_NOISE)]
            out.append(f"--- tail of {path} (INFO and above) ---")
        else:
            out.append(f"--- tail of {path} ---")
        out.extend(text[-lines:])
    return "\n".join(out) if out else "(no master log)"


# ---------------------------------------------------------------------------
# process helpers


def proc_state(pid):
    """State letter of a process from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def alive(pid):
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def group_members(pgid):
    """Live (non-zombie) pids whose process group is pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def port_open(port, host="127.0.0.1"):
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
        return True


def wait_for(pred, deadline, interval=0.05):
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ---------------------------------------------------------------------------
# salt event bus (same API on 3006, 3007 and 3008)


def load_master_opts(layout):
    import salt.config

    if not os.path.exists(layout.conf_file):
        die(f"{layout.conf_file} not found: start a master with --root {layout.root} first")
    return salt.config.master_config(layout.conf_file)


def master_event(opts, listen=True):
    import salt.utils.event

    return salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=listen)


def event_roundtrip(event, deadline):
    """Fire probe events until one comes back on `event`'s subscription.

    Proves the subscription is live (the publisher has accepted our
    connection), not only that the socket file exists.
    """
    while time.monotonic() < deadline:
        if not event.cpub and not event.connect_pub(timeout=1):
            time.sleep(0.1)
            continue
        tag = f"{PROBE_PREFIX}listen/{uuid.uuid4().hex}"
        try:
            event.fire_event({"probe": True}, tag)
        except Exception:  # pylint: disable=broad-except
            time.sleep(0.1)
            continue
        until = min(deadline, time.monotonic() + 1.0)
        while time.monotonic() < until:
            ev = event.get_event(wait=0.2, tag=tag, full=True, match_type="startswith")
            if ev and ev.get("tag") == tag:
                return True
    return False


def jsonable(value):
    if isinstance(value, dict):
        return {str(jsonable_key(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def jsonable_key(key):
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return key


# ---------------------------------------------------------------------------
# start / stop


def write_reactor_probe_sls(layout):
    path = os.path.join(layout.reactor_dir, "beacond_harness_probe.sls")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "beacond_harness_reactor_ready:\n"
            "  runner.event.send:\n"
            "    - args:\n"
            f"      - tag: {REACTOR_READY_TAG}\n"
            "      - data:\n"
            "          probe: {{ data.get('probe', '') | yaml_dquote }}\n"
        )
    return path


def build_config(layout, args):
    reactors = []
    for spec in args.reactor or []:
        glob, sep, sls = spec.partition("=")
        if not sep or not glob or not sls:
            die(f"--reactor wants TAG_GLOB=SLS_PATH, got {spec!r}")
        reactors.append({glob: [os.path.abspath(sls)]})
    if reactors:
        reactors.append({REACTOR_PROBE_TAG: [write_reactor_probe_sls(layout)]})

    conf = {
        "id": "beacond-test-master",
        "root_dir": layout.root,
        "user": "root",
        "interface": "127.0.0.1",
        "ipv6": False,
        "ret_port": args.ret_port,
        "publish_port": args.publish_port,
        "auto_accept": not args.no_auto_accept,
        "open_mode": False,
        "pki_dir": layout.pki_dir,
        "cachedir": layout.cachedir,
        "sock_dir": layout.sock_dir,
        "pidfile": layout.pidfile,
        "log_file": layout.log_file,
        "key_logfile": layout.key_log_file,
        "log_level": "warning",
        "log_level_logfile": args.log_level,
        "file_roots": {"base": [layout.file_roots]},
        "pillar_roots": {"base": [layout.pillar_roots]},
        "fileserver_backend": ["roots"],
        "ext_pillar": [],
        "worker_threads": args.worker_threads,
        "keysize": 2048,
        "transport": "zeromq",
        # keep startup and background work small
        "presence_events": False,
        "con_cache": False,
        "discovery": False,
        "enable_gpu_grains": False,
        "grains_cache": True,
        "minion_data_cache": True,
        "job_cache": True,
        "keep_jobs_seconds": 3600,
        "loop_interval": 60,
        "maintenance_interval": 3600,
        "fileserver_update_interval": 3600,
        "event_return": [],
        "reactor_worker_threads": 2,
        "runner_dirs": [],
        "file_recv": False,
    }
    if reactors:
        conf["reactor"] = reactors
    return conf


def write_config(layout, conf):
    # JSON is valid YAML; avoids depending on PyYAML's dumper details.
    tmp = layout.conf_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    os.replace(tmp, layout.conf_file)


def cmd_start(args):
    layout = Layout(args.root)
    state = layout.read_state()
    pid = state.get("pid")
    if pid and alive(pid) and group_members(pid):
        die(f"a master from {layout.root} is already running (pid {pid}); stop it first")
    for port in (args.ret_port, args.publish_port):
        if port_open(port):
            die(f"127.0.0.1:{port} is already in use")

    layout.makedirs()
    if args.master_key_from:
        for name in ("master.pem", "master.pub"):
            src = os.path.join(args.master_key_from, name)
            if not os.path.isfile(src):
                die(f"{src} not found (make one with: master.py genkey --out DIR)")
            dst = os.path.join(layout.pki_dir, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o400 if name.endswith(".pem") else 0o644)

    conf = build_config(layout, args)
    write_config(layout, conf)
    # a stale salt pidfile makes salt-master refuse to start
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.pidfile)

    started = time.monotonic()
    deadline = started + args.timeout
    with open(layout.console_log, "ab") as console:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [venv_bin("salt-master"), "-c", layout.conf_dir],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    layout.write_state(
        {
            "pid": proc.pid,
            "ret_port": args.ret_port,
            "publish_port": args.publish_port,
            "salt_master": venv_bin("salt-master"),
        }
    )

    def fail(what):
        tail = log_tail(layout)
        exited = proc.poll()
        if exited is None:
            _stop_group(proc.pid, 5.0)
        else:
            what += f" (salt-master exited with status {exited})"
        print(tail, file=sys.stderr)
        die(f"salt-master in {layout.root} {what} within {args.timeout:.0f}s")

    def ports_up():
        if proc.poll() is not None:
            return True  # stop waiting; checked below
        return port_open(args.ret_port) and port_open(args.publish_port)

    if not wait_for(ports_up, deadline) or proc.poll() is not None:
        fail("did not open ports 127.0.0.1:%d/%d" % (args.ret_port, args.publish_port))

    event = None
    try:
        opts = load_master_opts(layout)
        event = master_event(opts, listen=True)
        bus_ok = event_roundtrip(event, deadline)
        reactor_ok = bus_ok and (not conf.get("reactor") or reactor_roundtrip(event, deadline))
    except Exception as exc:  # pylint: disable=broad-except
        fail(f"could not be reached on its event bus ({type(exc).__name__}: {exc})")
    finally:
        if event is not None:
            with contextlib.suppress(Exception):
                event.destroy()
    if not bus_ok:
        fail("did not deliver an event on its event bus")
    if not reactor_ok:
        fail("reactor did not answer a probe event")
    if proc.poll() is not None:
        fail("exited during startup")
    if args.owner_pid:
        spawn_watchdog(proc.pid, args.owner_pid)
    print(f"ready pid={proc.pid}", flush=True)
    elapsed = time.monotonic() - started
    print(f"master.py: salt-master up in {elapsed:.1f}s", file=sys.stderr, flush=True)
    # Do not reap: the master keeps running after we exit.
    return 0


def reactor_roundtrip(event, deadline):
    """The reactor subscribes to the bus on its own schedule: wait until it reacts."""
    tokens = set()
    next_probe = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_probe:
            token = uuid.uuid4().hex
            tokens.add(token)
            event.fire_event({"probe": token}, REACTOR_PROBE_TAG)
            next_probe = time.monotonic() + 0.5
        ev = event.get_event(wait=0.1, tag=REACTOR_READY_TAG, full=True, match_type="startswith")
        if ev and (ev.get("data") or {}).get("probe") in tokens:
            return True
    return False


def _stop_group(pgid, timeout):
    """SIGTERM the group, SIGKILL after timeout; wait until all members are gone."""
    members = group_members(pgid)
    if not members:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if wait_for(lambda: not group_members(pgid), time.monotonic() + timeout, 0.05):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return wait_for(lambda: not group_members(pgid), time.monotonic() + 10.0, 0.05)


def spawn_watchdog(master_pid, owner_pid):
    """Detached process that stops the master's group once owner_pid exits.

    Keeps a test process that dies without running its cleanup (SIGKILL, abort)
    from leaking masters. Exits by itself when the master exits first.
    """
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)  # pylint: disable=protected-access
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)
        os.closerange(3, 1024)
        _watch(master_pid, owner_pid)
    finally:
        os._exit(0)  # pylint: disable=protected-access


def _watch(master_pid, owner_pid):
    import select

    try:
        fds = [os.pidfd_open(owner_pid), os.pidfd_open(master_pid)]
    except (AttributeError, OSError):
        fds = None
    if fds is not None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        poller.poll()  # blocks until one of them exits
    else:  # no pidfd (kernel < 5.3): poll /proc
        while alive(owner_pid) and alive(master_pid):
            time.sleep(0.5)
    if not alive(owner_pid) and group_members(master_pid):
        _stop_group(master_pid, 3.0)


def cmd_stop(args):
    layout = Layout(args.root)
    state = layout.read_state()
    pid = state.get("pid")
    if not pid:
        print("master.py: no master state in %s; nothing to stop" % layout.root, file=sys.stderr)
        return 0
    if not _stop_group(pid, args.timeout):
        die(f"processes of master group {pid} survive SIGKILL: {group_members(pid)}")
    port = state.get("ret_port")
    if port and not wait_for(lambda: not port_open(port), time.monotonic() + 10.0):
        die(f"127.0.0.1:{port} still accepts connections after the master stopped")
    print(f"stopped pid={pid}", flush=True)
    return 0


# ---------------------------------------------------------------------------
# events / fire


def cmd_events(args):
    layout = Layout(args.root)
    started = time.monotonic()
    deadline = started + args.timeout if args.timeout > 0 else float("inf")
    opts = load_master_opts(layout)
    event = master_event(opts, listen=True)
    sub_deadline = min(deadline, time.monotonic() + 60.0)
    if not event_roundtrip(event, sub_deadline):
        print(log_tail(layout, 20), file=sys.stderr)
        die(f"could not subscribe to the event bus of the master in {layout.root}")
    print("listening", file=sys.stderr, flush=True)

    count = 0
    out = sys.stdout
    try:
        while time.monotonic() < deadline:
            if args.owner_pid and not alive(args.owner_pid):
                break
            wait = min(1.0, max(0.05, deadline - time.monotonic()))
            ev = event.get_event(wait=wait, tag="", full=True, match_type="startswith")
            if not ev:
                continue
            tag = ev.get("tag") or ""
            if isinstance(tag, bytes):
                tag = tag.decode("utf-8", errors="replace")
            if tag.startswith(PROBE_PREFIX) or not tag.startswith(args.tag_prefix):
                continue
            out.write(json.dumps({"tag": tag, "data": jsonable(ev.get("data"))}) + "\n")
            out.flush()
            count += 1
            if args.count and count >= args.count:
                break
    except BrokenPipeError:
        pass
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            event.destroy()
    return 0


def cmd_fire(args):
    layout = Layout(args.root)
    opts = load_master_opts(layout)
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        die(f"--data is not JSON: {exc}")
    if not isinstance(data, dict):
        die("--data must be a JSON object")
    event = master_event(opts, listen=False)
    try:
        if not event.fire_event(data, args.tag, timeout=5000):
            die(f"could not fire {args.tag} on the master's event bus")
    finally:
        with contextlib.suppress(Exception):
            event.destroy()
    return 0


# ---------------------------------------------------------------------------
# keys


def salt_key(layout, *argv):
    if not os.path.exists(layout.conf_file):
        die(f"{layout.conf_file} not found: start a master with --root {layout.root} first")
    cmd = [venv_bin("salt-key"), "-c", layout.conf_dir, *argv]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        die(f"{' '.join(cmd)} failed with status {res.returncode}")
    return res.stdout


def cmd_key_change(flag):
    def run(args):
        layout = Layout(args.root)
        out = salt_key(layout, flag, args.id, "-y", "--out", "json")
        sys.stdout.write(out)
        return 0

    return run


def cmd_key_list(args):
    layout = Layout(args.root)
    out = salt_key(layout, "-L", "--out", "json")
    try:
        keys = json.loads(out) if out.strip() else {}
    except ValueError:
        die(f"unexpected salt-key output: {out!r}")
    for k in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        keys.setdefault(k, [])
    print(json.dumps(keys, sort_keys=True), flush=True)
    return 0


def cmd_genkey(args):
    import salt.crypt

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for name in ("master.pem", "master.pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    if hasattr(salt.crypt, "write_keys"):  # 3008+
        salt.crypt.write_keys(out, "master", args.keysize)
    else:  # 3006, 3007
        salt.crypt.gen_keys(out, "master", args.keysize)
    print(out, flush=True)
    return 0


# ---------------------------------------------------------------------------
# reactor helper

REACTOR_SLS = """\
# Written by beacond's tests/salt/master.py reactor-sls.
# Appends {{"tag": ..., "data": ...}} as one JSON line per event to the marker
# file, on the master itself (runner salt.cmd -> file.append): no minion needed.
beacond_reactor_marker:
  runner.salt.cmd:
    - args:
      - fun: file.append
      - path: {marker}
      - args:
        - {{{{ {{"tag": tag, "data": data}} | json | yaml_dquote }}}}
"""


def cmd_reactor_sls(args):
    marker = os.path.abspath(args.marker)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(REACTOR_SLS.format(marker=json.dumps(marker)))
    # file.append refuses a missing file: start with an empty marker.
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w", encoding="utf-8"):
        pass
    print(out, flush=True)
    return 0


# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="master.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("start", help="start a salt-master under --root")
    p.add_argument("--root", required=True)
    p.add_argument("--ret-port", type=int, required=True)
    p.add_argument("--publish-port", type=int, required=True)
    p.add_argument("--no-auto-accept", action="store_true")
    p.add_argument("--reactor", action="append", metavar="TAG_GLOB=SLS_PATH")
    p.add_argument("--master-key-from", metavar="DIR")
    p.add_argument("--worker-threads", type=int, default=2)
    p.add_argument("--log-level", default="debug", help="log_level_logfile")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--owner-pid",
        type=int,
        help="stop the master when this process exits (guards against leaked masters)",
    )
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop the master under --root")
    p.add_argument("--root", required=True)
    p.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        help="seconds between SIGTERM and SIGKILL (0: SIGKILL at once)",
    )
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("events", help="print the master's events as JSON lines")
    p.add_argument("--root", required=True)
    p.add_argument("--tag-prefix", default="")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--owner-pid", type=int, help="exit when this process exits")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("fire", help="fire an event on the master's event bus")
    p.add_argument("--root", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--data", default="{}")
    p.set_defaults(func=cmd_fire)

    for name, flag in (("key-accept", "-a"), ("key-reject", "-r"), ("key-delete", "-d")):
        p = sub.add_parser(name, help=f"salt-key {flag} ID")
        p.add_argument("--root", required=True)
        p.add_argument("--id", required=True)
        p.set_defaults(func=cmd_key_change(flag))

    p = sub.add_parser("key-list", help="salt-key -L as JSON")
    p.add_argument("--root", required=True)
    p.set_defaults(func=cmd_key_list)

    p = sub.add_parser("genkey", help="write a fresh master key pair")
    p.add_argument("--out", required=True)
    p.add_argument("--keysize", type=int, default=2048)
    p.set_defaults(func=cmd_genkey)

    p = sub.add_parser("reactor-sls", help="write a file-appending reactor SLS")
    p.add_argument("--out", required=True)
    p.add_argument("--marker", required=True)
    p.set_defaults(func=cmd_reactor_sls)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
