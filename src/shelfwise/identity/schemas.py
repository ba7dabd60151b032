from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shelfwise.identity.models import Role
from shelfwise.identity.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from shelfwise.identity.scopes import Scope
from shelfwise.types import Text

# Length is checked by the password policy (a clear problem), not here, so the policy
# has one home. The upper bound here only stops absurd inputs early.
Password = Annotated[Text, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
# A password being set: the document states the policy's bounds (12-128), which
# `identity.service.check_password_policy` enforces with its own problem.
NewPassword = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=MAX_PASSWORD_LENGTH,
        json_schema_extra={"minLength": MIN_PASSWORD_LENGTH},
        description=f"{MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters, not a "
        "commonly used password.",
    ),
]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[
        EmailStr,
        Field(
            description="An address at a real domain (special-use names such as .local "
            "or .test are refused)."
        ),
    ]
    password: NewPassword
    full_name: Annotated[Text, Field(max_length=200)] = ""


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Text: a NUL byte would reach PostgreSQL (which refuses it) and become a 500.
    email: Annotated[Text, Field(min_length=1, max_length=254)]
    password: Password


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105
    expires_in: int
    expires_at: datetime


class UserOut(BaseModel):
    """What a user may see about themself. Never the password hash."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    full_name: str
    role: Role
    is_active: bool
    created_at: datetime


class PrincipalOut(BaseModel):
    kind: str
    id: uuid.UUID
    scopes: list[Scope]
    user: UserOut | None = None


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[Text, Field(min_length=1, max_length=100)]
    scopes: Annotated[list[Scope], Field(min_length=1)]


class ApiKeyOut(BaseModel):
    """An API key's metadata. The secret is never returned after creation."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    prefix: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    secret: str = Field(description="Shown once. Store it now; it cannot be retrieved again.")


class TokenPairOut(TokenOut):
    """Access token, plus the refresh token for non-browser clients. Browsers (requests
    with an `Origin`) get the refresh token only as an HttpOnly cookie."""

    refresh_token: str | None = None


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Annotated[Text, Field(min_length=16, max_length=200)] | None = None


class SessionOut(BaseModel):
    user: UserOut
    csrf_token: str
    expires_at: datetime


class CsrfOut(BaseModel):
    csrf_token: str


class SignInOut(BaseModel):
    """One way a user is signed in: a browser session or a refresh-token family."""

    id: uuid.UUID
    kind: Literal["session", "refresh_family"]
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str
    ip: str
    current: bool


class UserContactOut(BaseModel):
    """Who placed an order, as shop staff need to see it: no role, no account state."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    full_name: str


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    is_active: bool | None = None


class RevokedOut(BaseModel):
    sessions: int
    refresh_families: int
