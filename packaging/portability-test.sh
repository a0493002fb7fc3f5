#!/usr/bin/env bash
# Portability, shown: the packaged binary (from the .deb) runs
#  1. in an old distribution's root: Debian 11 (glibc 2.31), made by debootstrap and cached under
#     ~/.cache/beacond/roots. Debian 10 (glibc 2.28, as RHEL 8) is no longer on deb.debian.org and
#     archive.debian.org is not reachable here, so 2.28 itself is shown by the symbol-version check
#     in build.sh (no GLIBC_ symbol newer than 2.28), and 2.31 by running it;
#  2. on this host with an NSS module configured: a user that exists only in libnss-extrausers'
#     database (nsswitch.conf `passwd: files extrausers`, bind-mounted in a private mount
#     namespace so the host's own files are untouched) owns a listening socket, and the
#     listening_ports beacon must name it. A static glibc binary cannot load the host's NSS
#     modules reliably; this is the case that would fail.
# Usage: packaging/portability-test.sh BEACOND.deb   (root; needs debootstrap, libnss-extrausers)
set -euo pipefail
deb=${1:?usage: portability-test.sh BEACOND.deb}
log() { printf '==> portability: %s\n' "$*" >&2; }
die() { printf 'portability-test.sh: FAIL: %s\n' "$*" >&2; exit 1; }
for pkg in debootstrap libnss-extrausers; do
    dpkg -s "$pkg" >/dev/null 2>&1 || {
        log "installing $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    }
done
scratch=$(mktemp -d /tmp/beacond-port.XXXXXX)
listener=
cleanup() {
    [ -n "$listener" ] && kill "$listener" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT
dpkg-deb -x "$deb" "$scratch/pkg"
bin=$scratch/pkg/usr/bin/beacond
[ -x "$bin" ] || die "no usr/bin/beacond in $deb"

# A config whose --once output proves the agent ran its beacons: `load` reads <procfs>/loadavg.
mkdir -p "$scratch/conf" "$scratch/ports"
cat >"$scratch/conf/minion" <<'EOF'
id: portability
beacons:
  load:
    - averages:
        1m: [0.0, 0.0]
        5m: [0.0, 0.0]
        15m: [0.0, 0.0]
    - onchangeonly: False
EOF

# --- 1. Debian 11 root -----------------------------------------------------------------------
root=${BEACOND_ROOTS:-$HOME/.cache/beacond/roots}/bullseye
if [ ! -x "$root/bin/sh" ]; then
    log "debootstrap bullseye into $root (once; cached)"
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase bullseye "$root.tmp" http://deb.debian.org/debian >/dev/null
    mv "$root.tmp" "$root"
fi
glibc=$(chroot "$root" /usr/bin/ldd --version | head -1 | awk '{print $NF}')
mkdir -p "$root/opt/beacond-test"
cp -r "$bin" "$scratch/conf" "$root/opt/beacond-test/"
in_root() { unshare --mount --pid --fork --mount-proc="$root/proc" chroot "$root" "$@"; }
in_root /opt/beacond-test/beacond --version >/dev/null || die "beacond --version in Debian 11 (glibc $glibc)"
in_root /opt/beacond-test/beacond --check -c /opt/beacond-test/conf >/dev/null 2>&1 ||
    die "beacond --check in Debian 11"
out=$(in_root /opt/beacond-test/beacond --once -c /opt/beacond-test/conf 2>/dev/null)
grep -q '"tag":"salt/beacon/portability/load/"' <<<"$out" || die "no load event in Debian 11: $out"
rm -rf "$root/opt/beacond-test"
log "ok: runs in Debian 11 (glibc $glibc): --version, --check, --once"

# --- 2. an NSS-only user on this host --------------------------------------------------------
uid=48213
mkdir -p "$scratch/extrausers"
echo "beacond-nss:x:$uid:$uid:NSS only:/nonexistent:/usr/sbin/nologin" >"$scratch/extrausers/passwd"
echo "beacond-nss:x:$uid:" >"$scratch/extrausers/group"
sed -E 's/^(passwd|group):.*/\1: files extrausers/' /etc/nsswitch.conf >"$scratch/nsswitch.conf"
getent passwd "$uid" >/dev/null && die "uid $uid already resolves on this host"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setpriv --reuid="$uid" --regid="$uid" --clear-groups \
    /usr/bin/python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$port)); s.listen(); time.sleep(120)" &
listener=$!
for _ in $(seq 100); do
    grep -q ":$(printf '%04X' "$port") 00000000:0000 0A" /proc/net/tcp && break
    sleep 0.1 # waiting for another process's listen(): no event to await from here
done
cat >"$scratch/ports/minion" <<'EOF'
id: portability
beacons:
  listening_ports:
    - emitatstartup: True
    - protocols: [tcp]
EOF
out=$(unshare --mount bash -c '
    mkdir -p /var/lib/extrausers
    mount --bind "$1/extrausers" /var/lib/extrausers
    mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf
    getent passwd "$2" >/dev/null || { echo "extrausers not active" >&2; exit 1; }
    "$3" --once -c "$1/ports"' _ "$scratch" "$uid" "$bin" 2>&1) || die "listening_ports with NSS: $out"
grep "\"port\":$port[,}]" <<<"$out" | grep -q '"user":"beacond-nss"' ||
    die "the socket of uid $uid was not attributed to the NSS-only user beacond-nss: $(grep "$port" <<<"$out")"
log "ok: an NSS-only user (libnss-extrausers) is resolved by the packaged binary"
