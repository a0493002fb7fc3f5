#!/usr/bin/python3
"""Cost of one listening_ports poll with many established connections: sock_diag (default)
against /proc/net (source: proc). In a network namespace it creates, opens one listener and
N loopback connections (2N sockets that are not listening), then times `beacond --once`
(startup included, the same for both) for each source.

    benches/listening_ports_cost.py [--bin target/release/beacond] [--conns 3000]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLDER = r"""
import socket, sys, resource
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4096)
port = srv.getsockname()[1]
keep = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port)); a, _ = srv.accept(); keep += [c, a]
print("ready", flush=True)
sys.stdin.read()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/beacond"))
    ap.add_argument("--conns", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    ns = f"bcdlp{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="beacond-lp-")
    holder = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", HOLDER, str(args.conns)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert holder.stdout.readline().strip() == b"ready"
        for source in ("netlink", "proc"):
            cfg = os.path.join(tmp, source)
            os.makedirs(os.path.join(cfg, "minion.d"))
            with open(os.path.join(cfg, "minion"), "w") as f:
                f.write(f"id: lp\ncachedir: {tmp}/cache\nbeacons:\n  listening_ports:\n"
                        f"    - emitatstartup: True\n    - source: {source}\n")
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                out = subprocess.run(["ip", "netns", "exec", ns, args.bin, "-c", cfg, "--once"],
                                     capture_output=True, check=True)
                times.append(time.perf_counter() - t0)
            n = out.stdout.count(b"\n")
            times.sort()
            print(f"{source:8} {2 * args.conns} connected sockets: --once median {1000 * times[len(times) // 2]:.1f} ms "
                  f"({n} listening socket events)")
    finally:
        if holder:
            holder.kill()
            holder.wait()
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
