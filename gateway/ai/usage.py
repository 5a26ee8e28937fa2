"""Token usage read from a provider's answer, JSON or streamed, in either wire format.

OpenAI: `usage.prompt_tokens` / `completion_tokens` (in a stream, the last chunk's, when the request asked
for `stream_options.include_usage`). Anthropic: `usage.input_tokens` (+ cache reads and writes) and
`output_tokens` (in a stream, message_start's input and message_delta's running output count).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.ai.sse import Event


class Usage:
    def __init__(self, kind: str) -> None:
        self.kind = kind  # the provider's format: "openAI" | "anthropic"
        self.input = 0
        self.output = 0
        self.seen = False  # whether the provider said anything about usage
        self.model = ""  # the model the provider says answered
        self.first_token: float | None = None  # perf_counter() of the first streamed content

    @property
    def total(self) -> int:
        return self.input + self.output

    def answer(self, data: Any) -> None:
        """A whole JSON answer."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            self.model = data["model"]
        if isinstance(data, dict) and isinstance(data.get("usage"), dict):
            self._count(data["usage"])

    def event(self, event: Event) -> None:
        """One streamed event (parsed only while there is something left to learn from it)."""
        text = event.data
        if text.strip() == "[DONE]" or (self.first_token is not None and self.model and "usage" not in text):
            return
        try:
            data = event.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if self.first_token is None and _has_content(data):
            self.first_token = time.perf_counter()
        if self.kind == "anthropic" and isinstance(data.get("message"), dict):
            data = data["message"]  # message_start
        if not self.model and isinstance(data.get("model"), str):
            self.model = data["model"]
        if isinstance(data.get("usage"), dict):
            self._count(data["usage"])

    def _count(self, usage: dict[str, Any]) -> None:
        self.seen = True
        if self.kind == "anthropic":
            counted = sum(usage.get(k) or 0 for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
            self.input = max(self.input, counted)
            self.output = max(self.output, usage.get("output_tokens") or 0)
        else:
            self.input = usage.get("prompt_tokens") or self.input
            self.output = usage.get("completion_tokens") or self.output


def _has_content(data: dict[str, Any]) -> bool:
    """Whether a streamed event carries generated content: text or a tool call."""
    if data.get("type") == "content_block_delta":
        return True
    for choice in data.get("choices") or []:
        delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
        if delta.get("content") or delta.get("tool_calls"):
            return True
    return False
