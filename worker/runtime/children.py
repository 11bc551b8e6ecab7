"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """For `preexec_fn`: on Linux the child gets SIGTERM when its parent dies, even by
    kill -9 (elsewhere nothing happens)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
