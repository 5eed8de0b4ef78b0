"""The query service for a fleet (`subnetsearch serve`): a read-only HTTP API over the store, on
FastAPI and uvicorn (optional extra `serve`). See `create_app`."""

from subnetsearch.service._app import (
    ARTIFACTS,
    FRONT_ARTIFACTS,
    LOOPBACK,
    create_app,
    new_token,
    read_token_digest,
    token_digest,
)

__all__ = ["ARTIFACTS", "FRONT_ARTIFACTS", "LOOPBACK", "create_app", "new_token", "read_token_digest", "token_digest"]
