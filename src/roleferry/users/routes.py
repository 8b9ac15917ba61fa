"""The caller's account and API keys; admins create users."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, EmailStr, Field

from roleferry.api.deps import AdminUser, CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.users import service
from roleferry.users.models import ApiKey

router = APIRouter(prefix="/api/v1", tags=["account"])


class UserOut(BaseModel):
    id: str
    email: str
    is_admin: bool
    created_at: UtcDateTime


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class NewApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself, shown this once only.")


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class UserIn(BaseModel):
    email: EmailStr
    is_admin: bool = False


class NewUserOut(BaseModel):
    user: UserOut
    api_key: NewApiKeyOut


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/api-keys")
async def list_api_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(k) for k in await service.list_keys(session, user)]


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyIn, user: CurrentUser, session: SessionDep) -> NewApiKeyOut:
    issued = await service.issue_key(session, user, name=body.name)
    await session.commit()
    return NewApiKeyOut(**ApiKeyOut.of(issued.record).model_dump(), key=issued.raw)


@router.get("/api-keys/{key_id}")
async def get_api_key(key_id: str, user: CurrentUser, session: SessionDep) -> ApiKeyOut:
    return ApiKeyOut.of(await service.get_key(session, user, key_id))


@router.delete("/api-keys/{key_id}")
async def revoke_api_key(key_id: str, user: CurrentUser, runtime: RuntimeDep) -> ApiKeyOut:
    async with runtime.db.write_session() as session:
        row = await service.revoke_key(session, user, key_id)
    # Forgotten once the revocation is committed: a request in between cannot cache it again.
    runtime.api_keys.forget(row.key_hash)
    return ApiKeyOut.of(row)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserIn, _admin: AdminUser, session: SessionDep) -> NewUserOut:
    created = await service.create_user(session, body.email, is_admin=body.is_admin)
    return NewUserOut(
        user=UserOut.model_validate(created.user, from_attributes=True),
        api_key=NewApiKeyOut(**ApiKeyOut.of(created.key.record).model_dump(), key=created.key.raw),
    )
