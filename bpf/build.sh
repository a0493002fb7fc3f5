#!/bin/sh
# Regenerates bpf/exec.bpf.o and bpf/attribute.bpf.o (committed, so a machine with only Rust
# builds the agent). Needs clang, bpftool and libbpf-dev (Debian: clang llvm bpftool
# libbpf-dev) and a kernel with BTF. vmlinux.h is generated into a temporary directory, never
# committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
btf=${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpftool btf dump file "$btf" format c > "$tmp/vmlinux.h"
arch=$(uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
for prog in exec attribute; do
	clang -g -O2 -target bpf -D__TARGET_ARCH_"$arch" -I"$tmp" -c "$here/$prog.bpf.c" -o "$tmp/$prog.bpf.o"
	# Keep BTF (CO-RE relocations need it) but drop DWARF: a smaller, reproducible object.
	llvm-strip -g "$tmp/$prog.bpf.o"
	mv "$tmp/$prog.bpf.o" "$here/$prog.bpf.o"
	echo "built $here/$prog.bpf.o"
done
