"""The system programs the cluster runs, found on PATH (and /usr/sbin, where Debian puts
nginx), or a message that says which package to install."""

from __future__ import annotations

import os
import shutil

# Program -> Debian package.
PACKAGES = {
    "nginx": "nginx",
    "pgbouncer": "pgbouncer",
    "redis-server": "redis-server",
    "openssl": "openssl",
}
SYSTEM_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class MissingBinaryError(RuntimeError):
    def __init__(self, names: list[str]) -> None:
        packages = " ".join(sorted({PACKAGES.get(name, name) for name in names}))
        super().__init__(
            f"not installed: {', '.join(names)}. Install with: sudo apt-get install -y {packages}"
        )
        self.names = names


def which(name: str) -> str | None:
    extra = os.pathsep.join(SYSTEM_DIRS)
    return shutil.which(name) or shutil.which(name, path=extra)


def require(*names: str) -> dict[str, str]:
    """Paths of every program in `names`; one error naming all that are missing."""
    found = {name: which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise MissingBinaryError(missing)
    return {name: path for name, path in found.items() if path is not None}
