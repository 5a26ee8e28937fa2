"""Token usage read from a provider's answer, JSON or streamed, in either wire format.

OpenAI: `usage.prompt_tokens` / `completion_tokens` (in a stream, the last chunk's, when the request asked
for `stream_options.include_usage`). Anthropic: `usage.input_tokens` (+ cache reads and writes) and
`output_tokens` (in a stream, message_start's input and message_delta's running output count).
"""

from __future__ import annotations

from typing import Any

from gateway.ai.sse import Event


class Usage:
    def __init__(self, kind: str) -> None:
        self.kind = kind  # the provider's format: "openAI" | "anthropic"
        self.input = 0
        self.output = 0
        self.seen = False  # whether the provider said anything about usage

    @property
    def total(self) -> int:
        return self.input + self.output

    def answer(self, data: Any) -> None:
        """A whole JSON answer."""
        if isinstance(data, dict) and isinstance(data.get("usage"), dict):
            self._count(data["usage"])

    def event(self, event: Event) -> None:
        """One streamed event."""
        if event.data.strip() == "[DONE]" or "usage" not in event.data:
            return
        try:
            data = event.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if self.kind == "anthropic" and isinstance(data.get("message"), dict):
            data = data["message"]  # message_start
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
