"""`http/request_urls.py` answers exactly what Starlette's `URL`s would."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import HTTPConnection

from shelfwise.http.request_urls import base_url, url_path

PATHS = ["/v1/orders", "/", "//evil", "/a?b", "/a#b", "/a\\b", "/caf\u00e9", "/a%2Fb", "/a;b", ""]
HOSTS: list[bytes | None] = [
    b"shelfwise.test",
    b"127.0.0.1:8000",
    b"[::1]:8443",
    b"example.com:99999",  # an invalid port: Starlette falls back to the server
    b"bad host",
    None,
]
SERVERS: list[Any] = [("127.0.0.1", 8000), ("::1", 443), ["10.0.0.1", 80], None]


def _scope(path: str, host: bytes | None, server: Any, scheme: str, root: str) -> Any:
    headers = [(b"host", host)] if host is not None else []
    return {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "path": path or "/",
        "root_path": root,
        "query_string": b"x=1",
        "headers": [(b"accept", b"*/*"), *headers],
    }


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("root", ["", "/api", "/api/"])
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("server", SERVERS)
def test_base_url_is_starlettes(scheme: str, root: str, host: bytes | None, server: Any) -> None:
    connection = HTTPConnection(_scope("/v1/orders", host, server, scheme, root))
    expected = str(HTTPConnection(_scope("/v1/orders", host, server, scheme, root)).base_url)
    assert base_url(connection) == expected
    assert base_url(connection) == expected  # and once remembered


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", [b"shelfwise.test", None])
def test_url_path_is_starlettes(path: str, host: bytes | None) -> None:
    scope = _scope(path, host, ("127.0.0.1", 8000), "http", "")
    assert url_path(HTTPConnection(scope)) == HTTPConnection(scope).url.path
