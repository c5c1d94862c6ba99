"""The bearer token check of every ``/v1`` route and ``/metrics`` (a no-op when the server runs without a token)."""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import APIError


def require_token(request: Request) -> None:
    token = request.app.state.serve.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise APIError(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                       "authentication_error", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(401, "invalid bearer token", "authentication_error", headers={"WWW-Authenticate": "Bearer"})
