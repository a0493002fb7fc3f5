#!/usr/bin/env bash
# Crypto test vectors from Salt's own code, one file per installed Salt series:
#   target/salt-vectors/crypto-<series>.json   (read by tests/salt_crypto_vectors.rs)
# Needs the venvs of tests/salt/setup.sh. Regenerates every time (fresh keys and data).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${BEACOND_SALT_CACHE:-$HOME/.cache/beacond/salt}"
out="${BEACOND_VECTORS_DIR:-target/salt-vectors}"
mkdir -p "$out"
made=0
for series in 3006 3007 3008; do
  py="$cache/$series/bin/python"
  [ -x "$py" ] || continue
  "$py" tests/salt/gen_crypto_vectors.py "$out/crypto-$series.json"
  made=$((made + 1))
done
[ "$made" -gt 0 ] || { echo "gen-vectors.sh: no Salt venv under $cache (run tests/salt/setup.sh)" >&2; exit 1; }
