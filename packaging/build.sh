#!/usr/bin/env bash
# Build beacond's .deb and .rpm into target/packages/, from the metadata in Cargo.toml
# ([package.metadata.deb], [package.metadata.generate-rpm]).
#
#   packaging/build.sh            # tools (if missing), binary, man page + completions, packages
#   packaging/build.sh --check-glibc BINARY   # only the portability check below
#
# The binary links dynamically against glibc 2.28's symbol versions (`cargo zigbuild --target
# x86_64-unknown-linux-gnu.2.28`: zig supplies the old glibc stubs), so one package runs on every
# glibc distribution back to RHEL 8 / Debian 10, and getpwuid/getaddrinfo go through the host's
# own NSS modules (sssd, LDAP, extrausers). A static glibc binary would dlopen the host's NSS
# modules against its own copy of glibc, which mis-resolves or fails. The script fails if the
# binary needs a GLIBC_ symbol version newer than 2.28.
# Environment: CARGO_TARGET_DIR is honoured; BEACOND_ZIG_VENV (default ~/.cache/beacond/zig-<v>)
# is where the ziglang wheel from PyPI is installed.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.15.2
TARGET=x86_64-unknown-linux-gnu
MAX_GLIBC=2.28

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
export CARGO_TARGET_DIR=$TARGET_DIR
OUT=$TARGET_DIR/packages
# Cargo.toml's package assets name target/packaging/gen/ relative to the source tree, wherever
# the build's target dir is.
GEN=$ROOT/target/packaging/gen
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: FAIL: %s\n' "$*" >&2; exit 1; }

# At most GLIBC_$MAX_GLIBC symbol versions (a static binary needs none).
check_glibc() { # binary
    if readelf -d "$1" | grep -q '(NEEDED)'; then
        local max
        max=$(objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
        log "$1: dynamic; highest GLIBC_ symbol version: ${max:-none}"
        if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
            objdump -T "$1" | grep "GLIBC_$max" | head -5 >&2 || true
            die "$1 needs GLIBC_$max > $MAX_GLIBC (RHEL 8)"
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
have=$(cargo-zigbuild --version 2>/dev/null | awk '{print $NF}' || true)
if [ "$have" != "$CARGO_ZIGBUILD_VERSION" ]; then
    log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION (cargo install --locked)"
    cargo install --locked --quiet cargo-zigbuild --version "=$CARGO_ZIGBUILD_VERSION"
fi
# zig itself, from PyPI's ziglang wheel (cargo-zigbuild runs `python3 -m ziglang` when no zig is
# on PATH).
ZIG_VENV=${BEACOND_ZIG_VENV:-$HOME/.cache/beacond/zig-$ZIGLANG_VERSION}
if ! "$ZIG_VENV/bin/python3" -c 'import ziglang' 2>/dev/null; then
    log "installing ziglang $ZIGLANG_VERSION into $ZIG_VENV"
    python3 -m venv "$ZIG_VENV"
    "$ZIG_VENV/bin/pip" install --quiet "ziglang==$ZIGLANG_VERSION"
fi
export PATH=$ZIG_VENV/bin:$PATH

# 2. The release binary (LTO, stripped: [profile.release]), against glibc 2.28. The explicit
#    --target keeps it apart from the host's target/release used by tests.
log "cargo zigbuild --release --target $TARGET.$MAX_GLIBC"
cargo zigbuild --release --locked --target "$TARGET.$MAX_GLIBC" --bin beacond
BIN=$TARGET_DIR/$TARGET/release/beacond
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
cargo generate-rpm --target "$TARGET" --target-dir "$TARGET_DIR" --output "$OUT/" >/dev/null
ls -l "$OUT" >&2
n=$(find "$OUT" -maxdepth 1 \( -name '*.deb' -o -name '*.rpm' \) | wc -l)
[ "$n" = 2 ] || die "expected one .deb and one .rpm in $OUT, found $n package(s)"
log "packages in $OUT"
