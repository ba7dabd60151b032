"""Constrained input types shared by the API schemas.

PostgreSQL text cannot hold NUL, and nothing UTF-8 can hold a lone surrogate (JSON lets a
client send `"\ud800"`); refusing both here turns what would be a driver or encoding
error (and a 500) into a clear 422 on the offending field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints


def storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


# Documented in the OpenAPI document as a pattern; enforced by `storable_text`.
NO_NUL_PATTERN = "^[^\\u0000]*$"
_NO_NUL_DOC = Field(json_schema_extra={"pattern": NO_NUL_PATTERN})
# Stripped names and reasons: also at least one character that is not whitespace.
_NOT_BLANK_DOC = Field(json_schema_extra={"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"})
Text = Annotated[str, AfterValidator(storable_text), _NO_NUL_DOC]
# Constraints sit on `str` itself (not on `Text`) so whitespace is stripped *before* the
# length is checked: on top of an AfterValidator pydantic checks lengths first and strips
# afterwards, which let "   " through as an empty name.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(storable_text),
    _NOT_BLANK_DOC,
]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9 _-]{0,63}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
MinorUnits = Annotated[int, Field(ge=0, le=2_147_483_647)]
Description = Annotated[Text, StringConstraints(max_length=5000)]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(storable_text),
    _NOT_BLANK_DOC,
]
