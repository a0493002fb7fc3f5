#!/usr/bin/env bash
# The full test suite, from a fresh machine: installs what the tests need (Debian packages,
# Salt 3006/3007/3008 in venvs cached under ~/.cache/beacond), then lint + every test.
# Usage: tests/run.sh            (BEACOND_SKIP_SALT=1 skips the tests that need a salt-master)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)
# Each stage's wall time, printed at the end (and on failure) so CI shows where the time goes.
stage_times=()
stage_name=setup
stage_t0=$start
stage() { # name: ends the running stage, starts the next
  stage_times+=("$(printf '%6d s  %s' $(( $(date +%s) - stage_t0 )) "$stage_name")")
  stage_name=$1
  stage_t0=$(date +%s)
  log "$1"
}
report_stages() {
  stage_times+=("$(printf '%6d s  %s' $(( $(date +%s) - stage_t0 )) "$stage_name")")
  printf '\n==> stage times\n'
  printf '%s\n' "${stage_times[@]}"
}
trap report_stages EXIT

# Debian packages the tests use: utmpdump (util-linux), ip (iproute2), dbus-daemon, openssl,
# rpm (package checks), systemd-analyze (unit checks), script (pty shells), g++ (libFuzzer),
# groff (the man page).
need_pkgs=()
for spec in utmpdump:util-linux ip:iproute2 dbus-daemon:dbus openssl:openssl rpm:rpm \
            systemd-analyze:systemd script:bsdutils g++:g++ make:make rsyslogd:rsyslog \
            clang:clang llvm-strip:llvm bpftool:bpftool groff:groff-base; do
  cmd=${spec%%:*}; pkg=${spec#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
# The sh beacon's eBPF program (bpf/exec.bpf.c) is rebuilt with Debian's clang below.
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
# Real journal files for the journald beacon's tests are written by systemd-journal-remote.
[ -x /lib/systemd/systemd-journal-remote ] || need_pkgs+=(systemd-journal-remote)
# The fault suite reads an exited agent's peak RSS from GNU time (`time` is also a shell keyword).
[ -x /usr/bin/time ] || need_pkgs+=(time)
# Salt's journald beacon needs python-systemd, which setup.sh builds against libsystemd.
pkg-config --exists libsystemd >/dev/null 2>&1 || need_pkgs+=(libsystemd-dev pkg-config)
# The service beacon's D-Bus tests run a systemd stand-in written with dbus-python.
/usr/bin/python3 -c 'import dbus, gi' >/dev/null 2>&1 || need_pkgs+=(python3-dbus python3-gi)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  stage "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# CI tests the eBPF object built fresh from source (the committed one serves machines with
# only Rust); tests/ebpf.rs then runs on it.
stage "eBPF object: bpf/build.sh"
bpf/build.sh

if [ "${BEACOND_SKIP_SALT:-0}" != 1 ] && [ -x tests/salt/setup.sh ]; then
  stage "Salt masters for the transport and conformance tests"
  tests/salt/setup.sh 3006 3007 3008
fi
if [ -x tests/salt/gen-vectors.sh ] && [ "${BEACOND_SKIP_SALT:-0}" != 1 ]; then
  stage "crypto test vectors from Salt's own code"
  tests/salt/gen-vectors.sh
fi

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
stage "cargo test"
# Unit and integration tests. Benchmarks are compiled by clippy above but not run here: they
# are measurements (cargo bench, benches/compare.sh), not checks.
cargo test --locked --no-fail-fast --lib --bins --tests -- --test-threads="${BEACOND_TEST_THREADS:-2}"

if [ -x packaging/test.sh ]; then
  stage "packages"
  packaging/test.sh
fi
if [ -x fuzz/run.sh ]; then
  stage "fuzzing (bounded)"
  fuzz/run.sh
fi
log "all checks passed in $(( $(date +%s) - start )) s"
