"""A cached catalog entry serves responses whose headers were encoded once (issue 14)."""

from __future__ import annotations

from starlette.responses import Response

from shelfwise.catalog.cache import CachedResponse

BODY = b'{"id":"p1","name":"Lamp"}'


def _plain(status_code: int) -> Response:
    """The response as the router built it before headers were prepared."""
    headers = {
        "Link": "<next>",
        "Cache-Control": "public, max-age=60",
        "Vary": "Accept-Encoding",
        "ETag": '"v3"',
    }
    body = BODY if status_code == 200 else b""
    return Response(body, status_code, headers, media_type="application/json")


def test_prepared_200_and_304_match_a_plain_response() -> None:
    cached = CachedResponse(BODY, '"v3"', {"Link": "<next>"})
    for status_code in (200, 304):
        prepared = cached.response(60, status_code=status_code)
        plain = _plain(status_code)
        assert (prepared.status_code, prepared.body) == (plain.status_code, plain.body)
        assert prepared.raw_headers == plain.raw_headers
    assert b"content-length" not in dict(cached.response(60, status_code=304).raw_headers)


def test_headers_added_to_one_response_do_not_reach_the_next() -> None:
    cached = CachedResponse(BODY, '"v3"')
    first = cached.response(60)
    first.headers["X-Request-ID"] = "abc"  # as middleware does to the message's list
    second = cached.response(60)
    assert b"x-request-id" not in dict(second.raw_headers)
    assert dict(second.raw_headers)[b"etag"] == b'"v3"'


def test_another_max_age_gets_its_own_headers() -> None:
    cached = CachedResponse(BODY, '"v3"')
    assert dict(cached.response(60).raw_headers)[b"cache-control"] == b"public, max-age=60"
    assert dict(cached.response(5).raw_headers)[b"cache-control"] == b"public, max-age=5"
