#!/bin/sh
# Cost of the journald/log/users/status/pkg/cert_info beacons (numbers for the report; not a
# test). Needs systemd-journal-remote. Usage: benches/file_beacons_cost.sh [N entries]
set -eu
N=${1:-100000}
BIN=${BIN:-target/release/beacond}
T=$(mktemp -d)
trap 'kill $AGENT 2>/dev/null || true; rm -rf "$T"' EXIT
mkdir -p "$T/j" "$T/etc" "$T/lists"
gen() { python3 -c "
import sys, time
t = int(time.time() * 1e6); n = int(sys.argv[1]); tag = sys.argv[2]
out = sys.stdout
for i in range(n):
    out.write(f'__REALTIME_TIMESTAMP={t+i}\n__MONOTONIC_TIMESTAMP={i}\n_BOOT_ID=0123456789abcdef0123456789abcdef\nSYSLOG_IDENTIFIER={\"sshd\" if i % 100 == 0 else \"cron\"}\nPRIORITY=6\n_PID={i}\nMESSAGE={tag} entry {i}\n\n')
" "$1" "$2"; }
gen "$N" old | /lib/systemd/systemd-journal-remote --output="$T/j/remote.journal" - 2>/dev/null
cp /etc/passwd /etc/group "$T/etc/"; : > "$T/etc/shadow"; : > "$T/app.log"
printf 'Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n' > "$T/status"
cat > "$T/minion" <<YAML
id: bench
cachedir: $T/cache
beacons:
  journald:
    - paths: [$T/j]
    - services:
        sshd:
          SYSLOG_IDENTIFIER: sshd
  log:
    - file: $T/app.log
    - tags:
        hello: {regex: hello}
  users:
    - passwd: $T/etc/passwd
    - group: $T/etc/group
    - shadow: $T/etc/shadow
  status:
    - interval: 60
  pkg:
    - pkgs: [dpkg]
    - dpkg_status: $T/status
    - apt_lists: $T/lists
    - interval: 60
YAML
echo "journal: $N entries, $(du -h "$T/j/remote.journal" | cut -f1)"
/usr/bin/time -f "first --once (seek to tail): %es, max RSS %MkB" "$BIN" -c "$T" --once >/dev/null
gen "$N" new | /lib/systemd/systemd-journal-remote --output="$T/j/remote.journal" - 2>/dev/null
/usr/bin/time -f "--once reading $N new entries ($((N / 100)) events): %es, max RSS %MkB" "$BIN" -c "$T" --once >/dev/null
"$BIN" -c "$T" --stdout >/dev/null 2>&1 &
AGENT=$!
sleep 2
echo "idle agent (6 beacons): RSS $(awk '/VmRSS/{print $2}' /proc/$AGENT/status) kB, CPU ticks $(awk '{print $14+$15}' /proc/$AGENT/stat)"
sleep 5
echo "after 5 s idle: CPU ticks $(awk '{print $14+$15}' /proc/$AGENT/stat) (event-driven: no wakeups)"
