"""Anthropic Messages served by an OpenAI-compatible provider: the Messages request translated to a chat
completions request, the answer (JSON or chunk stream) translated back to a Messages answer or its
event sequence (message_start, content_block_start/delta/stop, message_delta, message_stop).

`system` becomes a system message; `tool_use` blocks become tool calls and `tool_result` blocks tool
messages; usage maps prompt_tokens -> input_tokens, completion_tokens -> output_tokens; finish reasons
map stop -> end_turn, length -> max_tokens, tool_calls -> tool_use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from gateway.ai.sse import Event, encode

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
        "content_filter": "refusal"}


# -- request -------------------------------------------------------------------------------------


def chat_request(messages_body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages request as a chat completions request for `model`."""
    messages: list[dict[str, Any]] = []
    system = messages_body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for message in messages_body.get("messages") or []:
        if message.get("role") == "assistant":
            messages.append(_assistant(message.get("content")))
        else:
            messages.extend(_user(message.get("content")))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if messages_body.get("max_tokens") is not None:
        out["max_completion_tokens"] = messages_body["max_tokens"]
    for key in ("temperature", "top_p"):
        if messages_body.get(key) is not None:
            out[key] = messages_body[key]
    if messages_body.get("stop_sequences"):
        out["stop"] = list(messages_body["stop_sequences"])
    if messages_body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # for message_delta's output_tokens
    tools = [t for t in messages_body.get("tools") or [] if "input_schema" in t]
    if tools:
        out["tools"] = [
            {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                              "parameters": t["input_schema"]}}
            for t in tools
        ]
        choice = messages_body.get("tool_choice") or {}
        kind = choice.get("type")
        if kind in ("auto", "any", "none"):
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    user = (messages_body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _user(content: Any) -> list[dict[str, Any]]:
    """Tool results first (each a tool message, answering the assistant turn before), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "tool_result":
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                        "content": _text_of(block.get("content"))})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            source = block.get("source") or {}
            url = (f"data:{source.get('media_type')};base64,{source.get('data')}"
                   if source.get("type") == "base64" else source.get("url", ""))
            parts.append({"type": "image_url", "image_url": {"url": url}})
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _assistant(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text = _text_of(content)
    calls = [
        {"id": b.get("id", ""), "type": "function",
         "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
        for b in content or []
        if b.get("type") == "tool_use"
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


# -- response ------------------------------------------------------------------------------------


def usage(chat: dict[str, Any] | None) -> dict[str, Any]:
    u = chat or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    out = {"input_tokens": (u.get("prompt_tokens") or 0) - cached, "output_tokens": u.get("completion_tokens") or 0}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def messages_response(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion as a Messages answer."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                        "input": _arguments(function.get("arguments"))})
    return {
        "id": chat.get("id", ""),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model") or model,
        "content": content,
        "stop_reason": STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage(chat.get("usage")),
    }


def _arguments(text: Any) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


def messages_error(status: int, body: Any) -> dict[str, Any]:
    """An OpenAI error body (`{error: {message, type, code}}`) in Anthropic's shape."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    message = error.get("message", "") if isinstance(error, dict) else f"provider answered {status}"
    return {"type": "error", "error": {"type": kind, "message": message}}


async def message_events(chunks: AsyncIterator[Event], model: str) -> AsyncIterator[bytes]:
    """A chat.completion.chunk stream as the Messages event sequence."""
    started = False
    block: tuple[str, int] | None = None  # the open content block: (kind, index)
    tools: dict[int, int] = {}  # the chat tool_call index -> its content block index
    next_index = 0
    stop = "end_turn"
    totals: dict[str, Any] = {}

    def start(kind: str, body: dict[str, Any]) -> list[bytes]:
        nonlocal block, next_index
        out = close()
        block = (kind, next_index)
        out.append(encode({"type": "content_block_start", "index": next_index, "content_block": body},
                          "content_block_start"))
        next_index += 1
        return out

    def close() -> list[bytes]:
        nonlocal block
        if block is None:
            return []
        index, block = block[1], None
        return [encode({"type": "content_block_stop", "index": index}, "content_block_stop")]

    async for event in chunks:
        if event.data.strip() == "[DONE]":
            break
        data = event.json()
        if "error" in data and "choices" not in data:
            yield encode(messages_error(500, data), "error")
            return
        if not started:
            started = True
            message = {"id": data.get("id", ""), "type": "message", "role": "assistant", "model": data.get("model") or model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": 0, "output_tokens": 0}}
            yield encode({"type": "message_start", "message": message}, "message_start")
        if data.get("usage"):
            totals = data["usage"]
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if block is None or block[0] != "text":
                    for out in start("text", {"type": "text", "text": ""}):
                        yield out
                yield encode({"type": "content_block_delta", "index": block[1] if block else 0,
                              "delta": {"type": "text_delta", "text": delta["content"]}}, "content_block_delta")
            for call in delta.get("tool_calls") or []:
                position = call.get("index", 0)
                function = call.get("function") or {}
                if position not in tools:
                    for out in start("tool", {"type": "tool_use", "id": call.get("id", ""),
                                              "name": function.get("name", ""), "input": {}}):
                        yield out
                    tools[position] = next_index - 1
                if function.get("arguments"):
                    yield encode({"type": "content_block_delta", "index": tools[position],
                                  "delta": {"type": "input_json_delta", "partial_json": function["arguments"]}},
                                 "content_block_delta")
            if choice.get("finish_reason"):
                stop = STOP.get(choice["finish_reason"], "end_turn")
    if not started:
        message = {"id": "", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        yield encode({"type": "message_start", "message": message}, "message_start")
    for out in close():
        yield out
    counted = usage(totals)
    yield encode({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                  "usage": {"output_tokens": counted["output_tokens"], "input_tokens": counted["input_tokens"]}},
                 "message_delta")
    yield encode({"type": "message_stop"}, "message_stop")
