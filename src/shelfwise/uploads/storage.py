"""Streaming a request body to disk: temp file, size limit, type from the bytes, atomic rename.

The body is never held in memory: each chunk is hashed and written (in a worker thread,
file I/O blocks) as it arrives. The type is decided from the first bytes (magic numbers),
so a refused upload stops reading at once. Anything that goes wrong — too large, wrong
type, a client that disconnects, a body shorter than its `Content-Length` — removes the
temp file before the error leaves. Only a complete, checked file is renamed into place
(`os.replace`, atomic on one filesystem), under its content hash: readers see the old
file or the new one, never half of one.

Receiving (`stage`) and placing (`place`) are separate steps so that the caller can place
the file while it holds the lock on that content hash (see `uploads/service.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

SNIFF_BYTES = 12
TYPES = ("image/png", "image/jpeg", "image/webp")


def sniff(head: bytes) -> str | None:
    """The image type from magic bytes: PNG, JPEG or WebP; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= SNIFF_BYTES and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Staged:
    """A complete, checked upload still in the temp directory."""

    temp: Path
    stored: Stored


class UploadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The image exceeds {limit} bytes")


class UnsupportedImage(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(415, detail)


class IncompleteUpload(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    async def stage(
        self,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        declared_length: int | None = None,
        declared_type: str | None = None,
    ) -> Staged:
        """Receive the body into a temp file; the caller must `place` or `discard` it."""
        if declared_length is not None and declared_length > max_bytes:
            raise UploadTooLarge(max_bytes)  # refused before a byte is read
        await anyio.Path(self.tmp).mkdir(parents=True, exist_ok=True)
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        size = 0
        head = b""
        kind: str | None = None
        try:
            async with await anyio.open_file(temp, "wb") as out:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(max_bytes)
                    if kind is None and len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            kind = self._check_type(head, declared_type)
                    digest.update(chunk)
                    await out.write(chunk)
            if kind is None:  # a body shorter than the sniff window
                kind = self._check_type(head, declared_type)
            if declared_length is not None and size != declared_length:
                raise IncompleteUpload(
                    f"Received {size} of the {declared_length} bytes announced: truncated upload"
                )
            return Staged(temp, Stored(digest.hexdigest(), kind, size))
        except ClientDisconnect as exc:
            await self.discard_temp(temp)
            raise IncompleteUpload("The client disconnected before the upload finished") from exc
        except BaseException:
            await self.discard_temp(temp)
            raise

    async def place(self, staged: Staged) -> None:
        """Rename the staged file to its content-hash path (atomic; replaces equal bytes)."""
        final = self.path_of(staged.stored.sha256)
        await anyio.Path(final.parent).mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(os.replace, staged.temp, final)

    async def discard(self, staged: Staged) -> None:
        await self.discard_temp(staged.temp)

    @staticmethod
    async def discard_temp(temp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(temp).unlink()

    @staticmethod
    def _check_type(head: bytes, declared: str | None) -> str:
        kind = sniff(head)
        if kind is None:
            raise UnsupportedImage("Only PNG, JPEG and WebP images are accepted")
        if declared and declared.startswith("image/") and declared != kind:
            raise UnsupportedImage(f"The bytes are {kind}, not the declared {declared}")
        return kind

    async def remove(self, sha256: str) -> None:
        """Delete the file of `sha256`; one that is already gone is not an error."""
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(self.path_of(sha256)).unlink()
