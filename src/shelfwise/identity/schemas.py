from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shelfwise.identity.models import Role
from shelfwise.identity.passwords import MAX_PASSWORD_LENGTH
from shelfwise.identity.scopes import Scope

# Length is checked by the password policy (a clear problem), not here, so the policy
# has one home. The upper bound here only stops absurd inputs early.
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    password: Password
    full_name: Annotated[str, Field(max_length=200)] = ""


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(min_length=1, max_length=254)]
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
    name: Annotated[str, Field(min_length=1, max_length=100)]
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
