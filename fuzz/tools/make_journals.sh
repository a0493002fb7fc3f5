#!/bin/sh
# Regenerate the journal_file seeds: small real journal files written by systemd's
# systemd-journal-remote (apt systemd-journal-remote) from journal export format, then
# shrunk by shrink_journal.py (journal-remote sizes its data hash table for 128 MB files:
# 3.7 MB of empty buckets, more than a fuzz input may hold). `journalctl --verify` passes on
# every result. Usage: fuzz/tools/make_journals.sh fuzz/corpus/journal_file
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
now=$(date +%s%6N)
entry() { # i identifier priority message
    printf '__REALTIME_TIMESTAMP=%s\n__MONOTONIC_TIMESTAMP=%s\n_BOOT_ID=0123456789abcdef0123456789abcdef\nSYSLOG_IDENTIFIER=%s\nPRIORITY=%s\n_PID=%s\nMESSAGE=%s\n\n' \
        $((now + $1)) $((1000 + $1)) "$2" "$3" $((4000 + $1)) "$4"
}
three() {
    entry 0 sshd 6 "Accepted publickey for root from 10.0.0.1 port 22 ssh2"
    entry 1 kernel 4 "$1"
    entry 2 sshd 6 "session closed"
}
make() { # name env... < export
    name=$1; shift
    env "$@" /lib/systemd/systemd-journal-remote --output="$tmp/$name" - 2>/dev/null
    python3 "$here/shrink_journal.py" "$tmp/$name" "$out/$name"
    journalctl --verify --file="$out/$name" >/dev/null 2>&1
}
three short | make compact-3-entries.journal SYSTEMD_JOURNAL_COMPACT=1
# A MESSAGE above the compression threshold: a zstd-compressed DATA object.
three "$(head -c 3000 /dev/zero | tr '\0' k)" | make compact-zstd-field.journal SYSTEMD_JOURNAL_COMPACT=1
three short | make regular-3-entries.journal SYSTEMD_JOURNAL_COMPACT=0 SYSTEMD_JOURNAL_KEYED_HASH=0
# 40 entries: a chain of entry arrays.
i=0; while [ $i -lt 40 ]; do entry $i sshd 6 "Failed password for invalid user u$i from 10.0.0.$i port 22 ssh2"; i=$((i + 1)); done |
    make compact-40-entries-array-chain.journal SYSTEMD_JOURNAL_COMPACT=1
