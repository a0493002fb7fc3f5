#!/usr/bin/env bash
# beacond vs salt-minion's Python beacons, side by side against one real salt-master on
# loopback, in one run on one machine (issue 9). Run as root from anywhere:
#
#   benches/compare.sh            full run (~15 min on 2 cores, after the installs)
#   benches/compare.sh --smoke    the same steps with small numbers (~4 min)
#   benches/compare.sh --idle     only the idle comparison (~3 min): CPU ratio and RSS
#
# Installs what it needs: strace (apt; Salt's sh beacon runs it), Salt 3007 in a venv
# (tests/salt/setup.sh 3007) with pyinotify (Salt's inotify beacon), the release build of
# beacond. Then benches/compare/compare.py measures, for each agent alone with the same
# `beacons:` config: idle CPU and RSS of the whole process tree (printed first: the idle CPU
# ratio), write -> master-bus latency, a burst of exec()s (share captured, with argv,
# slow-down, CPU per 10,000 execs, RSS; beacond with its eBPF and its proc connector source),
# and an inotify flood's throughput to the master. The markdown table is printed and written
# to target/compare/results.md (raw numbers: target/compare/results.json, logs:
# target/compare/run/).
#
# Exit status: 0 when every run completed, non-zero when one failed (an agent did not start,
# no event arrived, an install failed). A slow number is reported, never a failure.
#
# Environment: BEACOND_SALT_CACHE (see tests/salt/setup.sh), CARGO_TARGET_DIR; BEACOND_BIN: a
# beacond binary to measure instead of building target/release/beacond.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=()
for arg in "$@"; do
    case "$arg" in
        --smoke) mode+=(--smoke) ;;
        --idle) mode+=(--idle-only) ;;
        -h | --help)
            sed -n '2,24p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "compare.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

log() { printf 'compare.sh: %s\n' "$*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
    log "must run as root (salt-minion's sh beacon uses strace; namespaces; /var/log/btmp)"
    exit 1
fi

missing=()
for tool in strace unshare nsenter; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "installing strace (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace util-linux >/dev/null
fi

log "Salt 3007 venv (tests/salt/setup.sh 3007)"
venv="$("$repo/tests/salt/setup.sh" 3007 | awk '$1 == "3007" { print $3 }')"
[[ -x "$venv/bin/python" ]] || {
    log "tests/salt/setup.sh did not produce a 3007 venv"
    exit 1
}
if ! "$venv/bin/python" -c 'import pyinotify' 2>/dev/null; then
    log "installing pyinotify into $venv (Salt's inotify beacon)"
    "$venv/bin/python" -m pip install -q pyinotify
fi

target="${CARGO_TARGET_DIR:-$repo/target}"
beacond="${BEACOND_BIN:-}"
if [[ -z "$beacond" ]]; then
    log "release build of beacond"
    (cd "$repo" && cargo build --release --quiet --bin beacond)
    beacond="$target/release/beacond"
fi
out="$target/compare"
mkdir -p "$out"

cmdline="benches/compare.sh${*:+ $*}"
exec "$venv/bin/python" "$repo/benches/compare/compare.py" \
    --beacond "$beacond" --out "$out" --cmdline "$cmdline" "${mode[@]}"
