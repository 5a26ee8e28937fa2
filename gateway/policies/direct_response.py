"""`directResponse`: the route answers with a fixed status and body, without a backend."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Scope

from gateway.config.policies import DirectResponse
from gateway.policies.http import Identity


class DirectResponseStep:
    def __init__(self, cfg: DirectResponse) -> None:
        media = "application/json" if cfg.body.lstrip().startswith(("{", "[")) else "text/plain; charset=utf-8"
        self.response = Response(cfg.body, status_code=cfg.status, media_type=media)

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        return self.response
