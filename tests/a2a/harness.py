"""Shared pieces for the A2A proxy tests: configs, raw JSON-RPC/REST requests and SSE reading."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

V1 = {"A2A-Version": "1.0"}
NO_STORE = "registry: {sqlite: null, healthInterval: 0}"  # no database file, no background card checks


def a2a_yaml(agents: dict[str, str], *, path: str = "/a2a", policies: str = "", headers: str = "") -> str:
    """A short `a2a:` block on port 0 serving `agents` (name -> URL); `headers` (YAML flow map) go to each."""
    listed = "".join(
        f"\n  - {{name: {name}, url: '{url}'{', headers: ' + headers if headers else ''}}}"
        for name, url in agents.items()
    )
    return f"a2a:\n  port: 0\n  path: {path}\n  {NO_STORE}\n  agents:{listed}\n{policies}"


def message(text: str, *, skill: str | None = None, task_id: str | None = None, legacy: bool = False) -> dict[str, Any]:
    """A user message as JSON (1.0: `role: ROLE_USER` + `parts[].text`; 0.3: `kind` fields)."""
    msg: dict[str, Any] = {"messageId": uuid.uuid4().hex}
    if legacy:
        msg |= {"role": "user", "kind": "message", "parts": [{"kind": "text", "text": text}]}
    else:
        msg |= {"role": "ROLE_USER", "parts": [{"text": text}]}
    if skill is not None:
        msg["metadata"] = {"skillId": skill}
    if task_id is not None:
        msg["taskId"] = task_id
    return msg


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int | str = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each SSE `data:` line, as it arrives."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])


def state(event: dict[str, Any]) -> str:
    """The task state a StreamResponse (or a Task) reports, '' if none."""
    for key in ("task", "statusUpdate"):
        if key in event:
            return event[key]["status"]["state"]
    return event.get("status", {}).get("state", "")
