"""OpenAI chat completions served by an Anthropic Messages provider: the request translated to a
Messages request, the answer (JSON or its event stream) translated back to a chat completion.

Messages with role system/developer become `system`; tool calls become `tool_use` blocks and tool
messages `tool_result` blocks; `usage` maps input_tokens -> prompt_tokens, output_tokens ->
completion_tokens; stop reasons map end_turn/stop_sequence -> stop, max_tokens -> length,
tool_use -> tool_calls, refusal -> content_filter.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.ai.sse import Event, encode

DEFAULT_MAX_TOKENS = 4096  # Messages requires max_tokens; chat completions do not

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# -- request -------------------------------------------------------------------------------------


def messages_request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completions request as a Messages request for `model`."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in chat.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                     "content": _text_of(message.get("content"))}
            _append(messages, "user", [block])
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message))
        else:
            _append(messages, "user", _user_blocks(message.get("content")))
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n".join(system)
    for key in ("temperature", "top_p", "stream"):
        if chat.get(key) is not None:
            out[key] = chat[key]
    stop = chat.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("tools"):
        out["tools"] = [_tool(t) for t in chat["tools"] if t.get("type", "function") == "function"]
    choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
    if choice is not None and out.get("tools"):
        out["tool_choice"] = choice
    if isinstance(chat.get("user"), str):
        out["metadata"] = {"user_id": chat["user"]}
    return out


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Messages alternate user/assistant: consecutive turns of one role become one."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image(part.get("image_url") or {}))
    return blocks


def _image(image: dict[str, Any] | str) -> dict[str, Any]:
    url = image if isinstance(image, str) else image.get("url", "")
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": arguments})
    return blocks


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": function.get("name", ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# -- response ------------------------------------------------------------------------------------


def usage(anthropic: dict[str, Any] | None) -> dict[str, Any]:
    u = anthropic or {}
    cached = u.get("cache_read_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + cached + (u.get("cache_creation_input_tokens") or 0)
    completion = u.get("output_tokens") or 0
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def chat_response(message: dict[str, Any]) -> dict[str, Any]:
    """A Messages answer as a chat completion."""
    text = "".join(b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text")
    calls = [
        {"id": b.get("id", ""), "type": "function",
         "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
        for b in message.get("content") or []
        if b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [{"index": 0, "message": reply, "finish_reason": FINISH.get(message.get("stop_reason") or "", "stop"),
                     "logprobs": None}],
        "usage": usage(message.get("usage")),
    }


def chat_error(status: int, body: Any) -> dict[str, Any]:
    """An Anthropic error body (`{type: error, error: {type, message}}`) in OpenAI's shape."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return {"error": {"message": f"provider answered {status}", "type": "api_error", "code": None}}
    return {"error": {"message": error.get("message", ""), "type": error.get("type", "api_error"), "code": None}}


async def chat_chunks(events: AsyncIterator[Event], include_usage: bool) -> AsyncIterator[bytes]:
    """A Messages event stream as chat.completion.chunk events, ending with `data: [DONE]`."""
    state: dict[str, Any] = {"id": "", "model": "", "created": int(time.time()), "input": {}, "tools": {}}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return encode({"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
                       "model": state["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    output = 0
    async for event in events:
        data = event.json()
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = data.get("message") or {}
            state.update(id=message.get("id", ""), model=message.get("model", ""), input=message.get("usage") or {})
            yield chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = state["tools"].setdefault(data.get("index", 0), len(state["tools"]))
                call = {"index": index, "id": block.get("id", ""), "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}
                yield chunk({"tool_calls": [call]})
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield chunk({"content": delta.get("text", "")})
            elif delta.get("type") == "input_json_delta":
                index = state["tools"].get(data.get("index", 0), 0)
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]})
        elif kind == "message_delta":
            counted = data.get("usage") or {}
            output = counted.get("output_tokens", output)
            state["input"] = {**state["input"], **{k: v for k, v in counted.items() if k != "output_tokens" and v}}
            reason = (data.get("delta") or {}).get("stop_reason")
            yield chunk({}, FINISH.get(reason or "", "stop"))
        elif kind == "error":
            yield encode(chat_error(500, data))
            break
    if include_usage:
        totals = usage({**state["input"], "output_tokens": output})
        yield encode({"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
                      "model": state["model"], "choices": [], "usage": totals})
    yield b"data: [DONE]\n\n"
