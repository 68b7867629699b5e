"""Bearer-token auth for every /api route (DESIGN.md section 8).

A dependency, not a middleware, so it runs before the request body is read and before any
handler: a request without the token changes nothing. The comparison is constant-time. In dev
mode the API is open — `create_app` refuses to build an app that is neither open by choice
nor protected by a token.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing header gets our 401 (with WWW-Authenticate), not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="The API token (`conveyor api --token`).")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    expected: bytes | None = request.app.state.token
    if expected is None:
        return  # dev mode
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise _unauthorized("invalid bearer token")
