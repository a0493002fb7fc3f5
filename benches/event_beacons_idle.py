#!/usr/bin/python3
"""Host cost of the event-driven `service` and `network_settings` beacons and of
`listening_ports`: idle CPU, wakeups and RSS of one beacond, and event latency.

    benches/event_beacons_idle.py [--bin target/release/beacond] [--idle 20]

Runs beacond inside a network namespace it creates (veth pair v0/v1), with a private
dbus-daemon and the test stand-in for systemd (tests/fixtures/service/fake_systemd.py; needs
python3-dbus and python3-gi), watching 3 services (onchangeonly), network_settings on v0 and
listening_ports every 5 s. Prints, after --idle seconds of quiet: CPU time used, voluntary
context switches (wakeups), VmRSS and VmHWM; then the latency from a change (`ip link set mtu`,
a service state change) to its event on stdout, median of 20. Root only (namespaces).
Everything is removed at exit.
"""
import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return out, ticks / os.sysconf("SC_CLK_TCK")


def read_event(proc, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not r:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if want in line:
            return time.monotonic()
        buf += line
    log = open(os.path.join(os.path.dirname(proc.args[6]), "agent.log")).read()
    raise SystemExit(f"no event containing {want!r}; got {buf!r}; log: {log}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/beacond"))
    ap.add_argument("--idle", type=float, default=20.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="beacond-bench-")
    ns = f"bcdbench{os.getpid()}"
    procs = []
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
        conf = os.path.join(tmp, "bus.conf")
        with open(conf, "w") as f:
            f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:path={tmp}/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>""")
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(bus)
        address = bus.stdout.readline().decode().strip()
        fake = subprocess.Popen(["/usr/bin/python3", os.path.join(REPO, "tests/fixtures/service/fake_systemd.py"),
                                 address, "sshd.service=active", "nginx.service=active", "salt-minion.service=active"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(fake)
        assert fake.stdout.readline().strip() == b"ready"
        os.makedirs(os.path.join(tmp, "cfg/minion.d"))
        with open(os.path.join(tmp, "cfg/minion"), "w") as f:
            f.write(f"""id: bench
cachedir: {tmp}/cache
beacons:
  service:
    - services:
        sshd: {{onchangeonly: True}}
        nginx: {{onchangeonly: True}}
        salt-minion: {{onchangeonly: True}}
    - dbus_address: '{address}'
  network_settings:
    - interfaces:
        v0: {{mtu: , ipaddr: , operstate: }}
  listening_ports:
    - interval: 5
""")
        agent = subprocess.Popen(["ip", "netns", "exec", ns, args.bin, "-c", os.path.join(tmp, "cfg"), "--stdout"],
                                 stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "agent.log"), "w"))
        procs.append(agent)
        for _ in range(3):
            read_event(agent, b"/service/")
        time.sleep(1.0)  # settle: measuring idle cost, not synchronising
        s0, cpu0 = status(agent.pid)
        time.sleep(args.idle)
        s1, cpu1 = status(agent.pid)
        wake = int(s1["voluntary_ctxt_switches"]) - int(s0["voluntary_ctxt_switches"])
        print(f"idle {args.idle:.0f}s: cpu {1000 * (cpu1 - cpu0):.0f} ms, "
              f"wakeups {wake} ({wake / args.idle:.2f}/s; listening_ports polls every 5 s), "
              f"VmRSS {s1['VmRSS']}, VmHWM {s1['VmHWM']}")
        lat = []
        for i in range(20):
            t0 = time.monotonic()
            subprocess.run(["ip", "-n", ns, "link", "set", "v0", "mtu", str(1400 - i)], check=True)
            lat.append(read_event(agent, f'"mtu":{1400 - i}'.encode()) - t0)
        print(f"network_settings latency (ip link set -> event): median {1000 * statistics.median(lat):.1f} ms, "
              f"max {1000 * max(lat):.1f} ms (includes running ip(8))")
        lat = []
        for i in range(20):
            state = "failed" if i % 2 == 0 else "active"
            t0 = time.monotonic()
            fake.stdin.write(f"set nginx.service {state}\n".encode())
            fake.stdin.flush()
            lat.append(read_event(agent, b'"running":' + (b"false" if i % 2 == 0 else b"true")) - t0)
        print(f"service latency (D-Bus signal -> event): median {1000 * statistics.median(lat):.1f} ms, "
              f"max {1000 * max(lat):.1f} ms")
        s2, _ = status(agent.pid)
        print(f"after: VmRSS {s2['VmRSS']}, VmHWM {s2['VmHWM']}")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
