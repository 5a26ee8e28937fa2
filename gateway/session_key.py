"""The key that seals MCP session ids, from the config (`config.session`) or the environment, which wins.

`SESSION_KEY` (as in the reference) replaces `config.session.key`; `SESSION_KEY_PREVIOUS` (an agentplex
addition: comma-separated keys) is added to `config.session.previousKeys`. Without any key, session ids stay
random and sessions live on the replica that opened them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.config.errors import ConfigError
from gateway.config.models import GlobalSettings
from protocols.mcp.session_seal import SessionSeal, parse_key

__all__ = ["ENV_KEY", "ENV_PREVIOUS", "session_seal"]

ENV_KEY = "SESSION_KEY"
ENV_PREVIOUS = "SESSION_KEY_PREVIOUS"


def session_seal(settings: GlobalSettings, environ: Mapping[str, str] | None = None) -> SessionSeal | None:
    """The seal for session ids (None: no key, ids stay random); ConfigError names a bad key's variable."""
    env = os.environ if environ is None else environ
    configured = settings.session
    key_text = env.get(ENV_KEY) or (configured.key if configured is not None else None)
    previous_texts = [k for k in configured.previousKeys if k] if configured is not None else []
    previous_texts += [k for k in env.get(ENV_PREVIOUS, "").split(",") if k.strip()]
    if not key_text:
        if previous_texts:
            raise ConfigError(f"{ENV_PREVIOUS} / config.session.previousKeys: set without a current key ({ENV_KEY})")
        return None
    key = _key(key_text, ENV_KEY if env.get(ENV_KEY) else "config.session.key")
    previous = [_key(text, f"{ENV_PREVIOUS} / config.session.previousKeys") for text in previous_texts]
    return SessionSeal(key, previous)


def _key(text: str, where: str) -> bytes:
    try:
        return parse_key(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
