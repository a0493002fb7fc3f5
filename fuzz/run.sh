#!/bin/sh
# Run every fuzz target for a bounded time (FUZZ_SECONDS, default 15 s each) from the seed
# corpus in fuzz/corpus/<target>. Exits non-zero on a crash, a hang (one input taking more than
# FUZZ_TIMEOUT s, default 10) or an input needing more than 1 GiB (the reproducer is in
# fuzz/artifacts/<target>/). Only the stable toolchain is needed: cargo-fuzz's nightly flags
# are enabled with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz when it is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
secs=${FUZZ_SECONDS:-15}
timeout=${FUZZ_TIMEOUT:-10}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
cd "$here/.."
targets=${FUZZ_TARGETS:-"config_yaml master_reply spool_record utmp_records dbus_message journal_file der_certificate netlink"}
status=0
for t in $targets; do
    # A scratch copy of the seed corpus: new inputs libFuzzer finds do not dirty the repo.
    work=$(mktemp -d "${TMPDIR:-/tmp}/beacond-fuzz-$t.XXXXXX")
    cp -r "$here/corpus/$t/." "$work/" 2>/dev/null || true
    echo "fuzz/run.sh: $t for ${secs}s"
    if ! cargo fuzz run --fuzz-dir "$here" "$t" "$work" -- \
        -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1; then
        echo "fuzz/run.sh: $t FAILED (reproducer under fuzz/artifacts/$t/)" >&2
        status=1
    fi
    rm -rf "$work"
done
exit $status
