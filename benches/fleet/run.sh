#!/bin/sh
# The fleet simulator (issue 14), one command:
#   benches/fleet/run.sh [IDS]        (default 2000 identities)
# N beacond identities in one process (benches/fleet/main.rs: the real transport and spool
# pipeline, linked from the beacond lib) against real salt-masters 3007 on loopback
# (tests/salt/master.py: own root_dir, ports, auto_accept), in two topologies:
#   single  one salt-master with a reactor: cold auth, ingest, two restarts with a backlog
#   syndic  a master of masters (order_masters) + two salt-masters, each with Salt's own
#           salt-syndic; half the identities on each; events counted on the top's bus
# Writes $CARGO_TARGET_DIR/fleet/results.md (default target/fleet/) and restart.png
# (delivered events/s over time after a salt-master restart; matplotlib in a bench-only venv,
# ~/.cache/beacond/plot-venv, made on first use). Keys are cached in
# ~/.cache/beacond/fleet-keys (first run: ~2 min for 2,000 RSA keys on 2 cores).
# On this 2-core machine: 8–10 min of runs after the build (491 s measured while 8 engineers
# built). FLEET_BIN=<path> runs an already built simulator (`cargo bench --bench fleet
# --no-run` prints its path) without cargo.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ids=${1:-2000}
venv=${BEACOND_SALT_VENV:-$HOME/.cache/beacond/salt/3007}
out=${CARGO_TARGET_DIR:-$repo/target}/fleet
mkdir -p "$out"
rm -f "$out"/results-*.md "$out"/restart-*.csv "$out/restart.png"
start=$(date +%s)

[ -x "$venv/bin/salt-master" ] || { echo "no Salt 3007 venv at $venv (tests/salt/setup.sh 3007)" >&2; exit 1; }
[ -x "$venv/bin/salt-syndic" ] || { echo "no salt-syndic in $venv" >&2; exit 1; }

# Enough file descriptors for N spools and N connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cd "$repo"
# The team's build lock when there is one (-o: the bench itself does not hold it).
lock=/tmp/beacond-cargo.lock
build() { if [ -e "$lock" ]; then flock -o "$lock" "$@"; else "$@"; fi; }
if [ -n "${FLEET_BIN:-}" ]; then
    bin=$FLEET_BIN
else
    build cargo bench --bench fleet --no-run >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
    bin=$(sed -n 's/.*Executable .*(\(.*\))$/\1/p' "$out/build.log" | tail -1)
fi
[ -x "$bin" ] || { echo "fleet bench binary not found (see $out/build.log)" >&2; exit 1; }
built=$(date +%s)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# One master with 4 MWorkers; with syndics three masters share the 2 cores: 2 each.
"$bin" --ids "$ids" --venv "$venv" --out "$out" --topology single --worker-threads 4
"$bin" --ids "$ids" --venv "$venv" --out "$out" --topology syndic --worker-threads 2

# The plot: matplotlib in a venv of its own (bench only; nothing of it ships).
pv=${BEACOND_PLOT_VENV:-$HOME/.cache/beacond/plot-venv}
if [ ! -x "$pv/bin/python" ] || ! "$pv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$pv" && "$pv/bin/pip" install -q matplotlib >/dev/null
fi
"$pv/bin/python" "$here/plot.py" "$out/restart.png" \
    "sessions lost (every identity signs in again)=$out/restart-single-lost.csv" \
    "sessions kept (3007 session cache)=$out/restart-single-kept.csv"

end=$(date +%s)
{
    echo "# beacond fleet simulator"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), salt $("$venv/bin/python" -c 'import salt.version; print(salt.version.__version__)'), $ids identities"
    echo "Load average before the runs: $load_before"
    echo
    cat "$out/results-single.md" "$out/results-syndic.md"
    echo "Plot: restart.png (events/s acknowledged by the master after it was started again)."
    echo
    echo "Run time: $(( end - start )) s in all, $(( end - built )) s after the build."
} >"$out/results.md"
cat "$out/results.md"
echo "wrote $out/results.md and $out/restart.png"
