#!/bin/sh
# The fleet simulator (issue 14), one command:
#   benches/fleet/run.sh [IDS]        (default 2000 identities)
# N beacond identities in one process (benches/fleet/main.rs: the real transport and spool
# pipeline, linked from the beacond lib) against one real salt-master 3007 on loopback
# (tests/salt/master.py: own root_dir, ports, auto_accept). Writes target/fleet/results.md
# and target/fleet/restart.png (delivered events/s over time around a master restart).
# Keys are cached in ~/.cache/beacond/fleet-keys (first run: ~1 min for 2,000 RSA keys).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ids=${1:-2000}
venv=${BEACOND_SALT_VENV:-$HOME/.cache/beacond/salt/3007}
out=${CARGO_TARGET_DIR:-$repo/target}/fleet
mkdir -p "$out"
start=$(date +%s)

[ -x "$venv/bin/salt-master" ] || { echo "no Salt 3007 venv at $venv (tests/salt/setup.sh 3007)" >&2; exit 1; }

# Enough file descriptors for N spools and N connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cd "$repo"
lock=/tmp/beacond-cargo.lock
build() { if [ -e "$lock" ]; then flock "$lock" "$@"; else "$@"; fi; }
build cargo bench --bench fleet --no-run >/dev/null 2>"$out/build.log" || { cat "$out/build.log" >&2; exit 1; }
bin=$(build cargo bench --bench fleet --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "fleet bench binary not found" >&2; exit 1; }

"$bin" --ids "$ids" --venv "$venv" --out "$out" --label single --worker-threads 4

{
    echo "# beacond fleet simulator"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), salt $("$venv/bin/python" -c 'import salt.version; print(salt.version.__version__)')"
    echo
    cat "$out"/results-*.md
    echo "Plot: restart.png (delivered events/s around the salt-master restart)."
    echo
    echo "Run time: $(( $(date +%s) - start )) s"
} >"$out/results.md"

# The plot: matplotlib in a venv of its own.
pv=${BEACOND_PLOT_VENV:-$HOME/.cache/beacond/plot-venv}
if [ ! -x "$pv/bin/python" ] || ! "$pv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$pv" && "$pv/bin/pip" install -q matplotlib >/dev/null
fi
"$pv/bin/python" "$here/plot.py" "$out"/restart-single-lost.csv "$out/restart.png"
cat "$out/results.md"
echo "wrote $out/results.md and $out/restart.png"
