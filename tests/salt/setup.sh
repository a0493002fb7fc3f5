#!/usr/bin/env bash
# Install real Salt releases into per-series virtualenvs for beacond's tests.
#
#   tests/salt/setup.sh [SERIES...]        SERIES in: 3006 3007 3008 (default: all)
#
# Each series gets a venv at ${BEACOND_SALT_CACHE:-$HOME/.cache/beacond/salt}/<series>
# holding the pinned latest patch release of that series. Salt is installed with
# --no-deps (the newest releases pin a certifi newer than the index serves) and
# then its runtime dependencies are installed from the release's own metadata
# (binary wheels preferred); if that fails, C build tools are installed with
# apt-get when missing and it is retried, then retried by bare names. EXTRAS
# (psutil, pyinotify, pyroute2, systemd-python) are always installed.
#
# Idempotent: a stamp file written after a verified install makes a second run
# a no-op; a venv without a matching stamp (a failed half-install, another pinned
# version) is removed and rebuilt.
#
# Environment:
#   BEACOND_SALT_CACHE   where the venvs live (default $HOME/.cache/beacond/salt)
#   BEACOND_PYTHON       interpreter for the venvs (default python3; needs >= 3.10)
#   BEACOND_SALT_JOBS    series installed in parallel (default 3)
#   BEACOND_SALT_ALL_DEPS=1  also install SKIPPED_REQS (see below)
#
# Output: one line per series, "<series> <version> <venv path>".
set -euo pipefail

# Latest patch release of each series available on the index (pip index versions salt).
declare -A PINNED=(
    [3006]=3006.30
    [3007]=3007.17
    [3008]=3008.5
)
# Bump when the install recipe changes, so stamped venvs are rebuilt.
RECIPE=1
# Installed on top of Salt's own requirements (what beacons and the harness use).
# psutil: the resource beacons (load, memusage, diskusage, swapusage, ...);
# pyinotify: the inotify beacon; pyroute2: the network_settings beacon; systemd-python: the
# journald beacon (conformance tests; builds in seconds against apt's libsystemd-dev and
# pkg-config, which tests/run.sh installs). Changing this list only tops up stamped venvs.
EXTRAS=(psutil pyinotify pyroute2 systemd-python)
# Salt requirements skipped unless BEACOND_SALT_ALL_DEPS=1: optional in Salt,
# no binary wheel on the index, and slow to compile (timelib, 3008: only used
# by salt.utils.dateutils for free-form date parsing; 1-3 min of C build).
SKIPPED_REQS=(timelib)

CACHE="${BEACOND_SALT_CACHE:-$HOME/.cache/beacond/salt}"
PYTHON="${BEACOND_PYTHON:-python3}"
JOBS="${BEACOND_SALT_JOBS:-3}"

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

stamp_base() { printf 'salt==%s recipe=%s' "$1" "$RECIPE"; }
stamp_text() {
    local IFS=,
    printf '%s extras=%s\n' "$(stamp_base "$1")" "${EXTRAS[*]}"
}

stamp_of() {
    local venv="$CACHE/$1"
    [[ -f "$venv/.beacond-ready" && -x "$venv/bin/salt-master" ]] || return 1
    cat "$venv/.beacond-ready"
}

# Fully installed as this script would install it now.
is_ready() {
    [[ "$(stamp_of "$1" 2>/dev/null)" == "$(stamp_text "${PINNED[$1]}")" ]]
}

# Salt installed by this recipe, but the EXTRAS list differs: top it up.
needs_extras_only() {
    local stamp
    stamp=$(stamp_of "$1" 2>/dev/null) || return 1
    [[ "$stamp" == "$(stamp_base "${PINNED[$1]}")" || "$stamp" == "$(stamp_base "${PINNED[$1]}") extras="* ]]
}

# C compiler and Python headers for requirements without a binary wheel.
# Installs them with apt-get (Debian) when missing; serialised across jobs.
ensure_build_tools() {
    local py=$1 have_cc=0 have_headers=0
    command -v cc >/dev/null && have_cc=1
    "$py" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
        && have_headers=1
    [[ $have_cc -eq 1 && $have_headers -eq 1 ]] && return 0
    if ! command -v apt-get >/dev/null || [[ $(id -u) -ne 0 ]]; then
        log "no C compiler or Python headers, and cannot apt-get them"
        return 1
    fi
    local -a pkgs=(gcc libc6-dev)
    if [[ $have_headers -eq 0 ]]; then
        pkgs+=("python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev")
    fi
    log "installing build tools with apt-get: ${pkgs[*]}"
    (
        flock 8
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=300 "${pkgs[@]}"
    ) 8>"$CACHE/.apt.lock" >&2
}

# Make sure "$PYTHON -m venv" can create a venv with pip (Debian splits ensurepip
# into python3-venv). Installs it with apt-get when missing and we are root.
ensure_venv_support() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set BEACOND_PYTHON)"
    "$PYTHON" - <<'EOF' || die "$PYTHON is too old: Salt's dependencies need Python >= 3.10"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
    if "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "$PYTHON lacks ensurepip/venv and apt-get is unavailable"
    [[ $(id -u) -eq 0 ]] || die "$PYTHON lacks ensurepip/venv: run as root or install python3-venv"
    local minor pkg
    minor=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    pkg="python${minor}-venv"
    log "installing $pkg with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$pkg" >&2 \
        || apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 python3-venv >&2
    "$PYTHON" -c 'import ensurepip, venv' || die "venv support still missing after apt-get"
}

# Print the runtime requirements of the installed salt distribution for this
# interpreter (markers evaluated), one per line. With --names, bare names only.
salt_requirements() {
    local py=$1 mode=${2:-} skip=""
    if [[ "${BEACOND_SALT_ALL_DEPS:-}" != 1 ]]; then
        skip="${SKIPPED_REQS[*]}"
    fi
    "$py" - "$mode" "$skip" <<'EOF'
import sys
from importlib.metadata import distribution
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

names_only = sys.argv[1] == "--names"
skipped = {n.lower() for n in sys.argv[2].split()}
seen = set()
for line in distribution("salt").requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    key = req.name.lower()
    if key in skipped:
        continue
    spec = str(req.specifier)
    # The newest releases pin a certifi the index does not serve: take any.
    if names_only or key == "certifi":
        spec = ""
    out = req.name + spec
    if out not in seen:
        seen.add(out)
        print(out)
EOF
}

install_series() {
    local series=$1 version=${PINNED[$1]} venv="$CACHE/$1"
    local pip_log="$CACHE/$series.install.log"
    : >"$pip_log"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" >>"$pip_log" 2>&1 \
        || { tail -n 30 "$pip_log" >&2; die "$series: creating the venv failed (log: $pip_log)"; }
    local py="$venv/bin/python"
    local -a pip=("$py" -m pip --disable-pip-version-check --no-input install --prefer-binary)

    "${pip[@]}" --no-deps "salt==$version" >>"$pip_log" 2>&1 \
        || { tail -n 30 "$pip_log" >&2; die "$series: pip install salt==$version failed (log: $pip_log)"; }

    local -a reqs
    mapfile -t reqs < <(salt_requirements "$py")
    if ! "${pip[@]}" "${reqs[@]}" "${EXTRAS[@]}" >>"$pip_log" 2>&1; then
        log "$series: installing requirements failed; checking build tools, then retrying"
        ensure_build_tools "$py" || true
        if ! "${pip[@]}" "${reqs[@]}" "${EXTRAS[@]}" >>"$pip_log" 2>&1; then
            log "$series: pinned requirements not installable, retrying by name"
            mapfile -t reqs < <(salt_requirements "$py" --names)
            "${pip[@]}" "${reqs[@]}" "${EXTRAS[@]}" >>"$pip_log" 2>&1 \
                || { tail -n 30 "$pip_log" >&2; die "$series: installing salt's dependencies failed (log: $pip_log)"; }
        fi
    fi

    # Verify what the harness relies on before stamping.
    local tool
    for tool in salt-master salt-key salt-run salt-call; do
        "$venv/bin/$tool" --version >>"$pip_log" 2>&1 \
            || { tail -n 30 "$pip_log" >&2; die "$series: $tool --version failed (log: $pip_log)"; }
    done
    "$py" -c 'import salt.beacons, salt.loader, salt.utils.event, salt.config, psutil, pyinotify, zmq' \
        >>"$pip_log" 2>&1 \
        || { tail -n 30 "$pip_log" >&2; die "$series: importing salt modules failed (log: $pip_log)"; }
    "$py" -c 'import salt.version, sys; v = salt.version.__version__; sys.exit(v != sys.argv[1] and v)' \
        "$version" >>"$pip_log" 2>&1 \
        || die "$series: installed salt is not $version (log: $pip_log)"

    stamp_text "$version" >"$venv/.beacond-ready"
}

top_up_extras() {
    local series=$1 venv="$CACHE/$1"
    local pip_log="$CACHE/$series.install.log"
    log "$series: installing extras ${EXTRAS[*]} into $venv"
    "$venv/bin/python" -m pip --disable-pip-version-check --no-input install --prefer-binary \
        "${EXTRAS[@]}" >>"$pip_log" 2>&1 \
        || { tail -n 30 "$pip_log" >&2; die "$series: installing ${EXTRAS[*]} failed (log: $pip_log)"; }
    stamp_text "${PINNED[$series]}" >"$venv/.beacond-ready"
}

main() {
    local -a series=()
    local arg
    for arg in "$@"; do
        case "$arg" in
            -h | --help) usage; exit 0 ;;
            *)
                [[ -n "${PINNED[$arg]+x}" ]] || die "unknown series '$arg' (known: ${!PINNED[*]})"
                series+=("$arg")
                ;;
        esac
    done
    if [[ ${#series[@]} -eq 0 ]]; then
        series=(3006 3007 3008)
    fi

    mkdir -p "$CACHE"
    local -a todo=()
    local s
    for s in "${series[@]}"; do
        is_ready "$s" || todo+=("$s")
    done

    if [[ ${#todo[@]} -gt 0 ]] && command -v flock >/dev/null; then
        # Serialise concurrent runs (e.g. parallel test binaries), then re-check.
        exec 9>"$CACHE/.setup.lock"
        flock 9
        local -a pending=("${todo[@]}")
        todo=()
        for s in "${pending[@]}"; do
            is_ready "$s" || todo+=("$s")
        done
    fi

    if [[ ${#todo[@]} -gt 0 ]]; then
        ensure_venv_support
        local -A pids=()
        local running=0 failed=0
        for s in "${todo[@]}"; do
            if needs_extras_only "$s"; then
                top_up_extras "$s" &
            else
                log "$s: installing salt==${PINNED[$s]} into $CACHE/$s"
                install_series "$s" &
            fi
            pids[$s]=$!
            running=$((running + 1))
            if [[ $running -ge $JOBS ]]; then
                wait -n || true
                running=$((running - 1))
            fi
        done
        for s in "${todo[@]}"; do
            wait "${pids[$s]}" 2>/dev/null || true
            is_ready "$s" || { log "$s: install failed"; failed=1; }
        done
        [[ $failed -eq 0 ]] || exit 1
    fi

    for s in "${series[@]}"; do
        printf '%s %s %s\n' "$s" "${PINNED[$s]}" "$CACHE/$s"
    done
}

main "$@"
