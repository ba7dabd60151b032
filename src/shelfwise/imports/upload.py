"""What an import upload must be before a byte of it is stored or a job is queued.

`POST /v1/imports` takes a CSV body. A request with no body, or with another media type
(a JSON body, a form), can never become a good import: refuse it at once (415/400) rather
than queue a job that is bound to be dead-lettered. Kept apart from the router so the use
case can move without losing its checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shelfwise.errors import MalformedRequest, UnsupportedMediaType

CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv"})
DIRECTORY = "imports"


class UnsupportedImportType(UnsupportedMediaType):
    title = "An import is a CSV file"


class EmptyImport(MalformedRequest):
    code = "empty_import"
    title = "The import has no body"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_import_request(headers: Mapping[str, str]) -> None:
    """Raises `UnsupportedImportType` (415) or `EmptyImport` (400) for a request that
    cannot carry a CSV; a chunked body of unknown length is checked once received."""
    kind = media_type(headers.get("content-type"))
    if kind not in CSV_MEDIA_TYPES:
        raise UnsupportedImportType(
            f"Send the CSV with Content-Type: text/csv (got {kind or 'none'!r})"
        )
    length = headers.get("content-length")
    if length is not None and length.strip() == "0":
        raise EmptyImport("The request has no CSV body")
    if length is None and "chunked" not in headers.get("transfer-encoding", "").lower():
        raise EmptyImport("The request has no CSV body")


def stored_file(data_dir: Path, name: str) -> Path:
    """Where a queued import's file is: job arguments carry only its name, never a path
    (they are shown to clients)."""
    path = data_dir / DIRECTORY / Path(name).name
    return path
