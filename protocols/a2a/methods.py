"""What an A2A request asks for: its method (in A2A 1.0 names), and the skill a message names.

Policy rules are written once, in 1.0 names: a 0.3 `message/send` is `SendMessage`, and
`POST .../message:send` on the HTTP+JSON binding is `SendMessage` too, so one rule covers every
binding and protocol version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# 0.3 JSON-RPC names -> 1.0 names (1.0 names map to themselves).
JSONRPC_METHODS = {
    "message/send": "SendMessage",
    "message/stream": "SendStreamingMessage",
    "tasks/get": "GetTask",
    "tasks/list": "ListTasks",
    "tasks/cancel": "CancelTask",
    "tasks/resubscribe": "SubscribeToTask",
    "tasks/pushNotificationConfig/set": "CreateTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/get": "GetTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/list": "ListTaskPushNotificationConfigs",
    "tasks/pushNotificationConfig/delete": "DeleteTaskPushNotificationConfig",
    "agent/getAuthenticatedExtendedCard": "GetExtendedAgentCard",
}
METHODS = frozenset(
    {
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
        "GetExtendedAgentCard",
    }
)
MESSAGE_METHODS = frozenset({"SendMessage", "SendStreamingMessage"})

# HTTP+JSON routes, matched at the end of the path: the interface may sit under a prefix (`/rest`),
# a tenant (`/{tenant}/...`) or the 0.3 `/v1`.
_SEG = r"[^/]+"
_REST: list[tuple[str, re.Pattern[str], str]] = [
    (verb, re.compile(rf"(?:^|/){pattern}$"), method)
    for verb, pattern, method in [
        ("POST", r"message:send", "SendMessage"),
        ("POST", r"message:stream", "SendStreamingMessage"),
        ("POST", rf"tasks/{_SEG}:cancel", "CancelTask"),
        ("GET", rf"tasks/{_SEG}:subscribe", "SubscribeToTask"),
        ("POST", rf"tasks/{_SEG}:subscribe", "SubscribeToTask"),
        ("GET", rf"tasks/{_SEG}/pushNotificationConfigs/{_SEG}", "GetTaskPushNotificationConfig"),
        ("DELETE", rf"tasks/{_SEG}/pushNotificationConfigs/{_SEG}", "DeleteTaskPushNotificationConfig"),
        ("POST", rf"tasks/{_SEG}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
        ("GET", rf"tasks/{_SEG}/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
        ("GET", r"tasks/[^/:]+", "GetTask"),
        ("GET", r"tasks", "ListTasks"),
        ("GET", r"extendedAgentCard", "GetExtendedAgentCard"),
        ("GET", r"v1/card", "GetExtendedAgentCard"),
    ]
]
_REST_PATHS = re.compile(r"(?:^|/)(?:message:(?:send|stream)|tasks(?:/.*)?|extendedAgentCard|v1/card)$")


def rest_method(verb: str, path: str) -> str | None:
    """The 1.0 method an HTTP+JSON request calls; "" for a REST path with another verb; None if the
    path is not an HTTP+JSON route (then a POST is JSON-RPC)."""
    for want, pattern, method in _REST:
        if verb == want and pattern.search(path):
            return method
    return "" if _REST_PATHS.search(path) else None


def jsonrpc_method(name: str) -> str:
    """The 1.0 name of a JSON-RPC method; unknown names are returned unchanged."""
    return JSONRPC_METHODS.get(name, name)


class NotJsonRpc(ValueError):
    """The body is not one JSON-RPC request; `code` is the JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class JsonRpcCall:
    method: str  # as sent
    request_id: str | int | None
    params: Any

    @property
    def a2a_method(self) -> str:
        return jsonrpc_method(self.method)


def parse_jsonrpc(body: bytes) -> JsonRpcCall:
    """One JSON-RPC request object, or NotJsonRpc (-32700 parse error, -32600 invalid request)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise NotJsonRpc(-32700, "Parse error: the body is not JSON") from None
    if not isinstance(data, dict):
        raise NotJsonRpc(-32600, "Invalid request: expected one JSON-RPC request object (batches are not supported)")
    request_id = request_id_of(data)
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise NotJsonRpc(-32600, "Invalid request: 'method' must be a non-empty string", request_id)
    return JsonRpcCall(method, request_id, data.get("params"))


def request_id_of(data: Any) -> str | int | None:
    """The id to echo in an error: a string or an integer (not a bool), else null."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def skill_of(params: Any) -> str:
    """The skill a SendMessage asks for: `message.metadata.skillId` (or `skill`), then the same keys
    in the request's own `metadata`; "" when the message names none."""
    if not isinstance(params, dict):
        return ""
    message = params.get("message")
    for holder in (message.get("metadata") if isinstance(message, dict) else None, params.get("metadata")):
        if isinstance(holder, dict):
            for key in ("skillId", "skill"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return ""
