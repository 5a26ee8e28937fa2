"""The `ai` policy's promptGuard, regex kind: built-in detectors (ssn, creditCard, phoneNumber, email, caSin)
and patterns of one's own, that reject a request or answer or mask what they find.

As in the reference, rules run in order over each text: `reject` refuses at the first match (the
guard's `rejection`: 403 and "The request was rejected due to inappropriate content" unless set);
`mask` replaces a built-in's matches with `<ENTITY>` (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN,
CA_SIN) and a pattern's with `<masked>`. Request guards read the system prompt and the messages'
text; answer guards the answer's text (not streamed answers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from gateway.config.ai import Guard


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@dataclass(frozen=True)
class Detector:
    entity: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] = lambda text: True

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self.pattern.finditer(text) if m.end() > m.start() and self.valid(m.group(0))]


BUILTINS = {
    "email": Detector("EMAIL_ADDRESS", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    "phoneNumber": Detector(
        "PHONE_NUMBER", re.compile(r"(?<![\w+])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?!\w)")
    ),
    "ssn": Detector(
        "US_SSN",
        re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}([- ]?)(?!00)\d{2}\1(?!0000)\d{4}(?!\d)"),
    ),
    "creditCard": Detector(
        "CREDIT_CARD",
        re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
        lambda text: 13 <= len(_digits(text)) <= 19 and _luhn(_digits(text)),
    ),
    "caSin": Detector(
        "CA_SIN", re.compile(r"(?<!\d)\d{3}([- ]?)\d{3}\1\d{3}(?!\d)"), lambda text: _luhn(_digits(text))
    ),
}


class Rejected(Exception):
    """A guard refused: `response` is what the caller gets."""

    def __init__(self, response: Response) -> None:
        self.response = response


class RegexGuard:
    def __init__(self, cfg: Guard) -> None:
        assert cfg.regex is not None
        self.reject = cfg.regex.action == "reject"
        self.rules: list[Detector] = [
            BUILTINS[r.builtin] if r.builtin is not None else Detector("masked", re.compile(r.pattern or ""))
            for r in cfg.regex.rules
        ]
        rejection = cfg.rejection
        headers = {k.lower(): v for k, v in (rejection.headers.set if rejection.headers else {}).items()}
        for k, v in (rejection.headers.add if rejection.headers else {}).items():
            headers.setdefault(k.lower(), v)
        for k in rejection.headers.remove if rejection.headers else []:
            headers.pop(k.lower(), None)
        self.rejection = (rejection.status, rejection.body, headers)

    def text(self, text: str) -> str:
        """The text, masked; raises Rejected on a reject rule's match."""
        for rule in self.rules:
            spans = rule.spans(text)
            if not spans:
                continue
            if self.reject:
                status, body, headers = self.rejection
                raise Rejected(Response(body, status_code=status, headers=headers, media_type="text/plain"))
            mask = f"<{rule.entity}>" if rule.entity != "masked" else "<masked>"
            for start, end in reversed(_merged(spans)):
                text = text[:start] + mask + text[end:]
        return text


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def guards(cfgs: Sequence[Guard]) -> list[RegexGuard]:
    return [RegexGuard(cfg) for cfg in cfgs]


def apply(guarded: Sequence[RegexGuard], holders: Iterator[tuple[Any, Any]]) -> None:
    """Every text slot (container, key) passes each guard in turn; masked texts are written back."""
    for container, key in holders:
        text = container[key]
        for guard in guarded:
            text = guard.text(text)
        container[key] = text


def request_texts(front: str, body: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The request's text slots in the caller's format: the system prompt and the messages' text."""
    if front == "messages":
        yield from _slots(body, "system")
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            yield from _slots(message, "content")


def answer_texts(front: str, body: Any) -> Iterator[tuple[Any, Any]]:
    """An answer's text slots in the caller's format."""
    if not isinstance(body, dict):
        return
    if front == "messages":
        yield from _slots(body, "content")
        return
    for choice in body.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            yield from _slots(message, "content")


def _slots(container: dict[str, Any], key: str) -> Iterator[tuple[Any, Any]]:
    value = container.get(key)
    if isinstance(value, str):
        yield container, key
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                yield part, "text"
