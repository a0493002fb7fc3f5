#!/usr/bin/env bash
# Packaging test (run by CI, as root): build the .deb and .rpm, inspect them, install the .deb on
# this machine, run the installed beacond, remove and purge it; install the .rpm into a scratch
# root; check the systemd unit. Prints PASS/FAIL lines and exits non-zero on any failure.
#
# Needs: dpkg (Debian), rpm (`apt-get install -y rpm`), systemd-analyze (systemd package), man-db.
# It installs and purges the package "beacond" on this machine: run it on CI or a scratch host.
# BEACOND_SKIP_SALT=1 skips the salt-minion coexistence test (packaging/coexist-test.sh).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PKGS=$TARGET_DIR/packages
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
T0=$SECONDS
npass=0
nfail=0
pass() { printf 'PASS: %s\n' "$*"; npass=$((npass + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; nfail=$((nfail + 1)); }
check() { # description command...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
finish() {
    echo "packaging: $((SECONDS - T0)) s in total"
    echo "$npass passed, $nfail failed"
    [ "$nfail" = 0 ]
    exit $?
}
scratch=$(mktemp -d /tmp/beacond-pkgtest.XXXXXX)
# Whether salt-minion's cache dir existed before this test (purge must then leave it alone).
had_cache_parent=0
[ -d /var/cache/salt/minion ] && had_cache_parent=1
installed_by_us=0
cleanup() {
    # Never leave the package on the machine when a check aborts half-way.
    if [ $installed_by_us = 1 ] && dpkg -s beacond >/dev/null 2>&1; then dpkg -P beacond >/dev/null 2>&1; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

for tool in dpkg-deb rpm systemd-analyze objdump; do
    command -v "$tool" >/dev/null || { fail "required tool $tool is not installed"; finish; }
done

# --- build -----------------------------------------------------------------------------------
t=$SECONDS
if packaging/build.sh; then pass "packaging/build.sh ($((SECONDS - t)) s)"; else fail "packaging/build.sh"; finish; fi
DEB=$(ls "$PKGS"/beacond_*.deb 2>/dev/null | head -1)
RPM=$(ls "$PKGS"/beacond-*.rpm 2>/dev/null | head -1)
[ -f "$DEB" ] && pass "built $(basename "$DEB")" || { fail "no .deb in $PKGS"; finish; }
[ -f "$RPM" ] && pass "built $(basename "$RPM")" || { fail "no .rpm in $PKGS"; finish; }
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release/beacond
echo "binary: $(stat -c %s "$BIN") bytes"
check "portability check rejects a binary needing GLIBC_2.34 (/bin/ls)" bash -c "! packaging/build.sh --check-glibc /bin/ls"
# Dynamic against glibc 2.28 (NSS works), and nothing beyond what every glibc system has.
only_glibc_libs() { # binary: every NEEDED entry is part of glibc (or libgcc_s)
    local libs
    libs=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    [ -n "$libs" ] || return 1
    ! grep -qvE '^(libc|libm|libdl|libpthread|librt|libutil|libgcc_s|ld-linux-x86-64)\.so\.[0-9]+$' <<<"$libs"
}
check "binary needs only glibc's own libraries" only_glibc_libs "$BIN"
check "binary needs at most GLIBC_2.28 (RHEL 8, Debian 10)" packaging/build.sh --check-glibc "$BIN"
t=$SECONDS
if packaging/portability-test.sh "$DEB"; then pass "portability: packaged binary on Debian 11 and with an NSS-only user ($((SECONDS - t)) s)"; else fail "portability (packaging/portability-test.sh)"; fi

# Files both packages must ship (drop-ins: every file of beacons/, however many there are).
expected=(
    /usr/bin/beacond
    /etc/salt/minion.d/beacond.conf.example
    /usr/share/man/man8/beacond.8.gz
    /usr/share/bash-completion/completions/beacond
    /usr/share/fish/vendor_completions.d/beacond.fish
)
for f in beacons/*; do expected+=("/usr/share/beacond/examples/$(basename "$f")"); done

# --- .deb metadata and contents --------------------------------------------------------------
info=$(dpkg-deb -I "$DEB")
check ".deb Package: beacond" grep -q '^ Package: beacond$' <<<"$info"
check ".deb Version: $VERSION" grep -q "^ Version: $VERSION" <<<"$info"
check ".deb Architecture: amd64" grep -q '^ Architecture: amd64$' <<<"$info"
check ".deb has postinst, prerm, postrm" bash -c "dpkg-deb -I '$DEB' | grep -q ' postinst' && dpkg-deb -I '$DEB' | grep -q ' prerm' && dpkg-deb -I '$DEB' | grep -q ' postrm'"
check ".deb postinst enables the unit (deb-systemd-helper)" bash -c "dpkg-deb -I '$DEB' postinst | grep -q 'deb-systemd-helper enable'"
check ".deb postinst restarts on upgrade" bash -c "dpkg-deb -I '$DEB' postinst | grep -q 'restart'"
check ".deb conffiles lists the example config" bash -c "dpkg-deb -I '$DEB' conffiles | grep -qx /etc/salt/minion.d/beacond.conf.example"
contents=$(dpkg-deb -c "$DEB" | awk '{print $NF}' | sed 's|^\./|/|')
for f in "${expected[@]}" /usr/share/zsh/vendor-completions/_beacond /usr/share/doc/beacond/copyright; do
    check ".deb contains $f" grep -qx "$f" <<<"$contents"
done
check ".deb contains the unit" grep -Eqx '(/usr)?/lib/systemd/system/beacond.service' <<<"$contents"
check ".deb installs no active salt config" bash -c "! grep -Eq '^/etc/salt/.*\\.conf$|^/etc/salt/minion$' <<<'$contents'"

# --- .rpm metadata and contents --------------------------------------------------------------
rinfo=$(rpm -qpi "$RPM" 2>/dev/null)
check ".rpm Name: beacond" grep -Eq '^Name +: beacond$' <<<"$rinfo"
check ".rpm Version: $VERSION" grep -Eq "^Version +: $VERSION\$" <<<"$rinfo"
check ".rpm License: Apache-2.0" grep -Eq '^License +: Apache-2.0$' <<<"$rinfo"
rfiles=$(rpm -qpl "$RPM" 2>/dev/null)
for f in "${expected[@]}" /usr/share/zsh/site-functions/_beacond /usr/lib/systemd/system/beacond.service /usr/share/licenses/beacond/LICENSE; do
    check ".rpm contains $f" grep -qx "$f" <<<"$rfiles"
done
check ".rpm marks the example as %config" bash -c "rpm -qpc '$RPM' 2>/dev/null | grep -qx /etc/salt/minion.d/beacond.conf.example"
rscripts=$(rpm -qp --scripts "$RPM" 2>/dev/null)
for s in postinstall preuninstall postuninstall; do
    check ".rpm has a $s scriptlet" grep -q "^$s scriptlet" <<<"$rscripts"
done
check ".rpm scriptlets run with /bin/sh" test "$(grep -c 'scriptlet (using /bin/sh)' <<<"$rscripts")" = 3
check ".rpm %post enables the unit" grep -q 'systemctl enable' <<<"$rscripts"
check ".rpm %preun disables the unit on erase" grep -q 'systemctl disable' <<<"$rscripts"
# Every scriptlet is valid sh, and without a running systemd it does nothing that fails.
mkdir -p "$scratch/scriptlets"
awk -v d="$scratch/scriptlets" '/^[a-z]+ scriptlet/ {n++; f=d "/" $1 ".sh"; next} f {print > f}' <<<"$rscripts"
for s in "$scratch"/scriptlets/*.sh; do
    check ".rpm scriptlet $(basename "$s") parses (sh -n)" sh -n "$s"
done
# Run them for real on this host (no systemd running here): install, then erase.
check ".rpm %post (install) succeeds without systemd" sh "$scratch/scriptlets/postinstall.sh" 1
check ".rpm %post created the cache dir" test -d /var/cache/salt/minion/beacond
check ".rpm %preun (erase) succeeds without systemd" sh "$scratch/scriptlets/preuninstall.sh" 0
check ".rpm %postun (erase) succeeds without systemd" sh "$scratch/scriptlets/postuninstall.sh" 0

# --- .rpm into a scratch root ----------------------------------------------------------------
rroot=$scratch/rpmroot
mkdir -p "$rroot"
# --noscripts: the scratch root has no /bin/sh to run them in (they are checked above).
check ".rpm installs into a scratch root" rpm --root "$rroot" --dbpath /var/lib/rpm -i --nodeps --noscripts "$RPM"
check ".rpm is registered in the scratch root" rpm --root "$rroot" --dbpath /var/lib/rpm -q beacond
check ".rpm files verify (rpm -V)" rpm --root "$rroot" --dbpath /var/lib/rpm -V --nodeps beacond
check "binary from the .rpm runs: --version" bash -c "'$rroot/usr/bin/beacond' --version | grep -qx 'beacond $VERSION'"
check ".rpm erases from the scratch root" rpm --root "$rroot" --dbpath /var/lib/rpm -e --nodeps --noscripts beacond
check ".rpm erase removed the binary" test ! -e "$rroot/usr/bin/beacond"

# --- .deb on this machine: install, run, remove, purge ---------------------------------------
if dpkg -s beacond >/dev/null 2>&1; then dpkg -P beacond >/dev/null 2>&1; fi
cache=/var/cache/salt/minion/beacond
installed_by_us=1
out=$(dpkg -i "$DEB" 2>&1)
st=$?
printf '%s\n' "$out" | sed 's/^/  dpkg: /'
[ $st = 0 ] && pass "dpkg -i (no systemd running: $([ -d /run/systemd/system ] && echo no || echo yes))" || fail "dpkg -i"
check "dpkg says beacond is installed" bash -c "dpkg -s beacond | grep -q 'Status: install ok installed'"
check "installed: /usr/bin/beacond --version" bash -c "/usr/bin/beacond --version | grep -qx 'beacond $VERSION'"
check "installed: unit enabled (multi-user.target.wants link)" test -L /etc/systemd/system/multi-user.target.wants/beacond.service
check "installed: cache dir $cache exists, mode 700" bash -c "[ \"\$(stat -c %a $cache)\" = 700 ]"
check "installed: man -w beacond finds beacond(8)" bash -c "man -w beacond | grep -q beacond.8"
check "installed: beacond(8) lists each beacon's options (load: averages)" bash -c "MANWIDTH=100 man beacond 2>/dev/null | grep -A4 '^   load' | grep -q 'averages: Averages, required'"
check "installed: bash completion loads" bash -c "source /usr/share/bash-completion/completions/beacond && complete -p beacond"
check "installed: postinst explained the inactive state" grep -q 'installed but inactive' <<<"$out"

# Run the installed binary on the shipped examples, in a scratch config dir.
cfg=$scratch/etc
mkdir -p "$cfg/minion.d" "$scratch/cache"
printf 'id: pkgtest\ncachedir: %s\n' "$scratch/cache" >"$cfg/minion"
check "installed: examples shipped ($(ls /usr/share/beacond/examples | wc -l) drop-ins)" test -n "$(ls /usr/share/beacond/examples)"
# Each example on its own (drop-ins may configure the same beacon differently), with beacond.conf.
for ex in /usr/share/beacond/examples/*; do
    rm -f "$cfg"/minion.d/*
    cp "$ex" "$cfg/minion.d/"
    cp /etc/salt/minion.d/beacond.conf.example "$cfg/minion.d/beacond.conf"
    check "installed: beacond --check accepts example $(basename "$ex") with beacond.conf" /usr/bin/beacond --check -c "$cfg"
done
# --once on a config whose event is certain on any host (memusage above 1%), with the hand-over.
rm -f "$cfg"/minion.d/*
cp /etc/salt/minion.d/beacond.conf.example "$cfg/minion.d/beacond.conf"
printf 'beacons:\n  memusage:\n    - percent: 1%%\n' >"$cfg/minion.d/mem.conf"
once=$(/usr/bin/beacond --once -c "$cfg" 2>"$scratch/once.err")
st=$?
check "installed: beacond --once exits 0" test $st = 0
check "installed: --once prints salt/beacon/pkgtest/memusage/ (beacond owns the beacons)" grep -q '"tag":"salt/beacon/pkgtest/memusage/"' <<<"$once"
# Without the hand-over, `beacons: enabled: False` switches beacond off too.
sed -i 's/^beacond_owns_beacons: True/beacond_owns_beacons: False/' "$cfg/minion.d/beacond.conf"
once=$(/usr/bin/beacond --once -c "$cfg" 2>/dev/null)
check "installed: beacond_owns_beacons: False + enabled: False → no events" test -z "$once"

check_unit_out=$(packaging/check-unit.sh 2>&1)
st=$?
printf '%s\n' "$check_unit_out" | sed 's/^/  check-unit: /'
score=$(sed -n 's/^exposure: \([0-9.]*\).*/\1/p' <<<"$check_unit_out")
[ $st = 0 ] && pass "packaging/check-unit.sh (verify + exposure ${score:-?})" || fail "packaging/check-unit.sh"

# Upgrade path: reinstalling runs prerm upgrade / postinst configure <old version>.
touch "$cache/position"
check "dpkg -i again (upgrade path)" dpkg -i "$DEB"
check "upgrade kept the state in $cache" test -e "$cache/position"

check "dpkg -r" dpkg -r beacond
check "removed: /usr/bin/beacond gone" test ! -e /usr/bin/beacond
check "removed: unit file gone" bash -c "! ls /lib/systemd/system/beacond.service /usr/lib/systemd/system/beacond.service 2>/dev/null"
check "removed: example config kept (conffile)" test -f /etc/salt/minion.d/beacond.conf.example
check "removed: state kept ($cache)" test -e "$cache/position"
check "dpkg -P" dpkg -P beacond
check "purged: example config gone" test ! -e /etc/salt/minion.d/beacond.conf.example
check "purged: state gone ($cache)" test ! -e "$cache"
check "purged: enable link gone" test ! -e /etc/systemd/system/multi-user.target.wants/beacond.service
if [ $had_cache_parent = 1 ]; then
    check "purged: salt-minion's /var/cache/salt/minion left alone" test -d /var/cache/salt/minion
else
    # Gone, unless something else (a salt-minion run meanwhile) put files there.
    check "purged: no empty /var/cache/salt/minion left behind" bash -c '[ ! -e /var/cache/salt/minion ] || [ -n "$(ls -A /var/cache/salt/minion)" ]'
fi
check "purged: dpkg no longer knows beacond" bash -c "! dpkg -s beacond 2>/dev/null | grep -q '^Status: install'"

# --- coexistence with a real salt-minion and salt-master -------------------------------------
if [ "${BEACOND_SKIP_SALT:-0}" = 1 ]; then
    echo "SKIP: salt-minion coexistence (BEACOND_SKIP_SALT=1)"
else
    t=$SECONDS
    if packaging/coexist-test.sh "$BIN"; then
        pass "salt-minion coexistence ($((SECONDS - t)) s)"
    else
        fail "salt-minion coexistence (packaging/coexist-test.sh)"
    fi
fi

finish
