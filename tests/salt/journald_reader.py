"""python_beacon.py with Salt's journald beacon reading test journal files.

    <venv>/bin/python tests/salt/journald_reader.py JOURNAL_DIR [python_beacon.py ARGS...]

Salt's journald beacon opens the host's journal with systemd.journal.Reader() and
has no option for another directory. This wrapper wraps Reader.__init__ so that a
Reader opened without path/files opens JOURNAL_DIR (sd_journal_open_directory);
the class itself is kept (Reader's own code refers to it by name). It then runs python_beacon.py unchanged: the events are still produced by Salt's
beacon code (its seek_tail/get_previous start, its matching, its
simple_types_filter), only the journal it reads is the test's.
"""

import os
import sys

import systemd.journal

if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
    raise SystemExit("usage: journald_reader.py JOURNAL_DIR [python_beacon.py ARGS...]")
JOURNAL_DIR = os.path.abspath(sys.argv[1])


_reader_init = systemd.journal.Reader.__init__


def _dir_reader_init(self, *args, **kwargs):
    if not args and kwargs.get("path") is None and kwargs.get("files") is None:
        kwargs["path"] = JOURNAL_DIR
    _reader_init(self, *args, **kwargs)


systemd.journal.Reader.__init__ = _dir_reader_init

import python_beacon  # noqa: E402  (this file's directory; python_beacon drops it from sys.path)

sys.exit(python_beacon.main(sys.argv[2:]))
