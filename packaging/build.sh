#!/usr/bin/env bash
# Build beacond's .deb and .rpm into target/packages/, from the metadata in Cargo.toml
# ([package.metadata.deb], [package.metadata.generate-rpm]).
#
#   packaging/build.sh            # tools (if missing), binary, man page + completions, packages
#   packaging/build.sh --check-glibc BINARY   # only the portability check below
#
# The binary is linked statically (glibc, -C target-feature=+crt-static) so one package runs on
# every glibc distribution back to RHEL 8 / Debian 10; the script fails if the binary turns out
# to be dynamic and needs a GLIBC_ symbol version newer than 2.28.
# Environment: BEACOND_PKG_STATIC=0 builds a dynamic binary instead (then the 2.28 check bites).
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
TARGET=x86_64-unknown-linux-gnu
MAX_GLIBC=2.28

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/packages
GEN=$ROOT/target/packaging/gen
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: FAIL: %s\n' "$*" >&2; exit 1; }

# A static binary needs no glibc at all; a dynamic one at most GLIBC_$MAX_GLIBC.
check_glibc() { # binary
    if readelf -d "$1" | grep -q '(NEEDED)'; then
        local max
        max=$(objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
        log "$1: dynamic; highest GLIBC_ symbol version: ${max:-none}"
        if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
            objdump -T "$1" | grep "GLIBC_$max" | head -5 >&2 || true
            die "$1 needs GLIBC_$max > $MAX_GLIBC (RHEL 8); build static (BEACOND_PKG_STATIC=1)"
        fi
    else
        log "$1: static (no NEEDED entries): needs no glibc on the host"
    fi
}

if [ "${1:-}" = --check-glibc ]; then
    check_glibc "${2:?usage: build.sh --check-glibc BINARY}"
    exit 0
fi

# 1. The packaging tools, pinned; skipped when that version is already installed.
need_tool() { # crate version command
    local have
    have=$(cargo "$3" --version 2>/dev/null | awk '{print $NF}' || true)
    if [ "$have" = "$2" ]; then
        log "$1 $2 present"
        return
    fi
    log "installing $1 $2 (cargo install --locked)"
    local t0=$SECONDS
    cargo install --locked --quiet "$1" --version "=$2"
    log "installed $1 in $((SECONDS - t0)) s"
}
need_tool cargo-deb "$CARGO_DEB_VERSION" deb
need_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" generate-rpm

# 2. The release binary (LTO, stripped: [profile.release]). An explicit --target keeps these
#    RUSTFLAGS away from build scripts and from the host's target/release used by tests.
RUSTFLAGS_PKG=${RUSTFLAGS:-}
if [ "${BEACOND_PKG_STATIC:-1}" = 1 ]; then
    RUSTFLAGS_PKG="$RUSTFLAGS_PKG -C target-feature=+crt-static"
fi
log "cargo build --release --target $TARGET (RUSTFLAGS='${RUSTFLAGS_PKG# }')"
RUSTFLAGS="$RUSTFLAGS_PKG" cargo build --release --locked --target "$TARGET" --bin beacond
BIN=$ROOT/target/$TARGET/release/beacond
[ -x "$BIN" ] || die "no binary at $BIN"

# 3. Portability (check_glibc, defined above).
check_glibc "$BIN"
log "binary size: $(stat -c %s "$BIN") bytes"

# 4. Man page and completions, generated from the clap definition (src/cli.rs) by a dev-only
#    example, so clap_mangen/clap_complete never reach the shipped binary.
rm -rf "$GEN"
mkdir -p "$GEN"
cargo run --quiet --locked --example gen-docs -- "$GEN" >/dev/null
gzip -9n "$GEN/beacond.8"
for f in beacond.8.gz beacond.bash _beacond beacond.fish; do
    [ -s "$GEN/$f" ] || die "gen-docs did not write $f"
done

# 5. The packages.
rm -rf "$OUT"
mkdir -p "$OUT"
log "cargo deb"
cargo deb --no-build --no-strip --target "$TARGET" --output "$OUT" >/dev/null
log "cargo generate-rpm"
cargo generate-rpm --target "$TARGET" --output "$OUT/" >/dev/null
ls -l "$OUT" >&2
n=$(find "$OUT" -maxdepth 1 \( -name '*.deb' -o -name '*.rpm' \) | wc -l)
[ "$n" = 2 ] || die "expected one .deb and one .rpm in $OUT, found $n package(s)"
log "packages in $OUT"
