"""A self-signed certificate for nginx's TLS listener, made once with the `openssl` CLI
(the Python `cryptography` package is not a dependency). Development only: production
mounts a real certificate at the same paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"


def ensure_self_signed(directory: Path, openssl: str) -> tuple[Path, Path]:
    """`directory/tls.crt` and `tls.key` for localhost and 127.0.0.1, created if missing."""
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # noqa: S603 (fixed arguments, our own paths)
        [
            openssl, "req", "-x509", "-nodes", "-days", "365",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key
