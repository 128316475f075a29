"""Atomically written files get the usual permissions (mkstemp alone would give 0600)."""

import os
import stat

from crystalscope.io.atomic import atomic_write


def test_atomic_write_uses_umask_permissions(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    target = tmp_path / "out.txt"
    with atomic_write(target) as fh:
        fh.write("x")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~old
    assert target.read_text() == "x"
