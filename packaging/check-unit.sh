#!/usr/bin/env bash
# Check packaging/beacond.service: `systemd-analyze verify` (syntax, directives, executables,
# man page) and `systemd-analyze security --offline=yes` (exposure score; target <= 4.0).
#
#   packaging/check-unit.sh [UNIT_FILE]
#
# verify needs the ExecStart binary: when /usr/bin/beacond is not installed, a copy of the unit
# whose ExecStart points at the locally built binary is verified instead (said so below).
# Prints "exposure: N" and PASS/FAIL lines; exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.."
UNIT=${1:-packaging/beacond.service}
MAX_EXPOSURE=${BEACOND_MAX_EXPOSURE:-4.0}
fail=0
pass() { printf 'PASS: %s\n' "$*"; }
failed() { printf 'FAIL: %s\n' "$*"; fail=1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
verify_unit=$tmp/beacond.service
cp "$UNIT" "$verify_unit"
man_opt=--man=yes
if [ ! -x /usr/bin/beacond ]; then
    bin=""
    t=${CARGO_TARGET_DIR:-$PWD/target}
    for b in "$t"/x86_64-unknown-linux-gnu/release/beacond "$t"/release/beacond "$t"/debug/beacond; do
        [ -x "$b" ] && { bin=$(realpath "$b"); break; }
    done
    if [ -z "$bin" ]; then
        failed "no /usr/bin/beacond and no built binary under target/: build first"
        exit 1
    fi
    sed -i "s|^ExecStart=/usr/bin/beacond|ExecStart=$bin|" "$verify_unit"
    echo "note: /usr/bin/beacond is not installed; verifying with ExecStart=$bin"
fi
if ! man -w beacond >/dev/null 2>&1; then
    man_opt=--man=no
    echo "note: man page beacond(8) not installed; Documentation= not checked"
fi

if out=$(systemd-analyze verify "$man_opt" "$verify_unit" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify $UNIT"
else
    printf '%s\n' "$out"
    failed "systemd-analyze verify $UNIT"
fi

report=$(systemd-analyze security --offline=yes --no-pager "$UNIT" 2>&1)
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -1)
if [ -z "$score" ]; then
    printf '%s\n' "$report"
    failed "systemd-analyze security printed no exposure level"
else
    printf '%s\n' "$report" | grep '✗' || true
    echo "exposure: $score (systemd-analyze security --offline=yes; 0 = locked down, 10 = unprotected)"
    if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
        pass "exposure $score <= $MAX_EXPOSURE"
    else
        failed "exposure $score > $MAX_EXPOSURE"
    fi
fi
exit $fail
