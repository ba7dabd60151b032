"""ETags and conditional request headers (If-None-Match, If-Match)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from shelfwise.errors import PreconditionRequired
from shelfwise.http.conditional import NO_VERSION, etag_for, expected_version, is_not_modified


def request_with(**headers: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/products/x",
        "query_string": b"",
        "headers": [
            (name.replace("_", "-").lower().encode(), value.encode())
            for name, value in headers.items()
        ],
    }
    return Request(scope)


def test_etag_for_is_a_strong_quoted_version() -> None:
    assert etag_for(1) == '"v1"'
    assert etag_for(123456) == '"v123456"'
    assert not etag_for(7).startswith("W/")


# -- If-None-Match -----------------------------------------------------------------------


def test_not_modified_is_false_without_header() -> None:
    assert is_not_modified(request_with(), etag_for(3)) is False
    assert is_not_modified(request_with(if_none_match=""), etag_for(3)) is False


@pytest.mark.parametrize(
    "header",
    [
        '"v3"',
        'W/"v3"',  # weak comparison: a weak tag matches its strong twin
        '"v1", "v3"',
        '"v1","v3"',
        '  "v2" ,  W/"v3"  ',
        "*",
        '"v9", *',
    ],
)
def test_not_modified_matches(header: str) -> None:
    assert is_not_modified(request_with(if_none_match=header), etag_for(3)) is True


@pytest.mark.parametrize(
    "header",
    [
        '"v2"',
        'W/"v4"',
        '"v1", "v2"',
        "v3",  # unquoted: not the same tag
        '"v30"',
        '"v3 "',
        ",",
    ],
)
def test_not_modified_does_not_match(header: str) -> None:
    assert is_not_modified(request_with(if_none_match=header), etag_for(3)) is False


def test_not_modified_accepts_a_weak_current_etag() -> None:
    assert is_not_modified(request_with(if_none_match='"v3"'), 'W/"v3"') is True


# -- If-Match ----------------------------------------------------------------------------


def test_missing_if_match_is_precondition_required() -> None:
    with pytest.raises(PreconditionRequired):
        expected_version(request_with())
    with pytest.raises(PreconditionRequired):
        expected_version(request_with(if_match=""))


@pytest.mark.parametrize("tag", ['"v5"', '"v1"', '"v999999999999999999"'])
def test_strong_tag_gives_its_version(tag: str) -> None:
    assert expected_version(request_with(if_match=tag)) == int(tag.strip('"v'))


@pytest.mark.parametrize(
    "header",
    [
        'W/"v5"',  # If-Match uses strong comparison: weak tags never match
        "v5",
        '"5"',
        '"vfive"',
        '"v-5"',
        '"v1234567890123456789"',  # 19 digits: beyond the accepted range
        "garbage",
        ", ,",
    ],
)
def test_weak_or_garbage_if_match_expects_no_version(header: str) -> None:
    # No row has it: the write fails with 412 when the resource exists, 404 when not.
    assert expected_version(request_with(if_match=header)) == NO_VERSION


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ('W/"v4", "v5"', 5),
        ('garbage, "v6"', 6),
        ('"v7", "v8"', 7),  # the first strong tag wins
        ('W/"v1" , W/"v2", "v3"', 3),
    ],
)
def test_list_picks_the_strong_match(header: str, version: int) -> None:
    assert expected_version(request_with(if_match=header)) == version


@pytest.mark.parametrize("header", ["*", " * ", '"v3", *'])
def test_if_match_star_matches_any_current_version(header: str) -> None:
    # RFC 9110 §13.1.1: `*` matches any current representation.
    assert expected_version(request_with(if_match=header)) is None
