"""KVM errors as the real ioctls report them: a negative errno (docs/memory-model.md §1).

``KvmError.errno`` is the errno name the simulated syscall returns (EINVAL, EEXIST, EBADF, ...);
``tdx_status`` carries the SEAMCALL status when a TDX module error caused it.
"""

from __future__ import annotations

import errno as _errno


class KvmError(Exception):
    def __init__(self, errno: str, message: str, *, tdx_status: int | None = None) -> None:
        assert hasattr(_errno, errno), errno
        super().__init__(f"{errno}: {message}")
        self.errno = errno
        self.message = message
        self.tdx_status = tdx_status


def einval(message: str) -> KvmError:
    return KvmError("EINVAL", message)
