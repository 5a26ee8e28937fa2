"""What of a target's configuration may be shown: its URL, command line, headers and environment carry
credentials, and an error text may quote any of them.

Shown is what is clearly structure; every other value is hidden, so a credential in a place nobody
thought of stays hidden too:
- URLs: scheme, host, port and path. Userinfo and fragment go; query values and path segments that
  look like keys are hidden (query names stay).
- header values: only those of a few standard, credential-free headers (Accept, Content-Type, ...).
- environment values: only those of a few well-known process settings (PATH, HOME, LANG, ...).
- arguments: flags, words, names, paths and numbers. Hidden are the value after or joined to a flag
  that names a credential (`--token X`, `--api-key=X`), a header (`-H "Name: value"`) or an
  environment variable (`-e NAME=value`); the value of any `NAME=value` or `Name: value`; anything
  that looks like a key (20+ letters and digits, a PEM block); URLs as above. An argument with spaces
  (`sh -c "..."`) is read word by word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

REDACTED = "<redacted>"

_SHOWN_HEADERS = frozenset(
    {
        "accept", "accept-charset", "accept-encoding", "accept-language", "cache-control", "connection",
        "content-encoding", "content-language", "content-type", "dnt", "host", "origin", "pragma", "referer",
        "user-agent", "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
        "x-real-ip", "x-request-id", "traceparent", "tracestate", "mcp-protocol-version", "a2a-version",
        "access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
        "access-control-allow-credentials", "access-control-expose-headers", "access-control-max-age",
        "content-security-policy", "strict-transport-security", "x-frame-options", "x-content-type-options",
        "referrer-policy", "permissions-policy", "vary", "server", "x-powered-by",
    }
)  # fmt: skip
_SHOWN_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
        "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "NODE_ENV", "LOG_LEVEL",
    }
)  # fmt: skip
# Flags whose value is a credential; `sig` and `key` also catch `--signal` and `--keyboard`: hiding
# a harmless value costs a reader little, showing a secret costs much.
_CREDENTIAL_FLAG = re.compile(
    r"auth|token|secret|pass|pwd|(^|[-_])pw$|key|cookie|session|credential|sig|bearer|private", re.I
)
_HEADER_FLAGS = frozenset({"-H", "--header", "--headers", "--http-header"})
_ENV_FLAGS = frozenset({"-e", "--env", "--environment", "--set-env"})
_KEYLIKE = re.compile(r"[A-Za-z0-9_+=~-]{20,}")
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]*[^\s'"<>:;,.)\]]""")  # not a sentence's punctuation
_HEADER_SHAPE = re.compile(r"([A-Za-z0-9_-]+):\s*(.*)", re.S)
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)=(.*)", re.S)


def url(value: str) -> str:
    """`https://u:p@host/mcp/<key>?api_key=k` -> `https://host/mcp/<redacted>?api_key=<redacted>`."""
    return _url(value)[0]


def header(name: str, value: str) -> str:
    return _header(name, value)[0]


def env(name: str, value: str) -> str:
    return value if name in _SHOWN_ENV else REDACTED


def args(values: Sequence[str]) -> list[str]:
    """`[--token, X, --api-key=Y, -v, pkg]` -> `[--token, <redacted>, --api-key=<redacted>, -v, pkg]`."""
    return [shown for shown, _ in _args(values)]


def command_line(command: str, arguments: Sequence[str]) -> str:
    return " ".join([command, *args(arguments)])


def hidden(
    target_url: str = "",
    arguments: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    """The configured values these rules hide (longest first): what an error text must not quote either."""
    found: set[str] = set(_url(target_url)[1]) if target_url else set()
    for _, secrets in _args(arguments):
        found.update(secrets)
    found.update(v for k, v in (environment or {}).items() if k not in _SHOWN_ENV)
    for name, value in (headers or {}).items():
        found.update(_header(name, value)[1])
    # Too short to be a credential, and replacing them would garble the text.
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def text(message: str, secrets: Iterable[str] = ()) -> str:
    """An error text fit to show: each URL in its shown form, each of `secrets` hidden."""
    message = _URL.sub(lambda m: url(m.group()), message)
    for secret in secrets:
        message = message.replace(secret, REDACTED)
    return message


# -- the rules, each giving (shown form, hidden parts) --------------------------------------------


def _url(value: str) -> tuple[str, list[str]]:
    if "://" not in value:  # host:port, say
        return _value(value)
    try:
        parts = urlsplit(value)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return REDACTED, [value]
    secrets = [s for s in (parts.username, parts.password, parts.fragment) if s]
    segments = []
    for segment in parts.path.split("/"):
        if _keylike(segment):
            secrets.append(segment)
            segment = REDACTED
        segments.append(segment)
    host = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme}://{host}{f':{port}' if port else ''}{'/'.join(segments)}"
    if parts.query:
        pairs = [pair.partition("=") for pair in parts.query.split("&")]
        secrets.extend(v if eq else k for k, eq, v in pairs if v or not eq)
        secrets.extend(v for _, v in parse_qsl(parts.query) if v)
        shown += "?" + "&".join(f"{k}={REDACTED if v else ''}" if eq else REDACTED for k, eq, v in pairs)
    return shown, secrets


def _header(name: str, value: str) -> tuple[str, list[str]]:
    if name.lower() in _SHOWN_HEADERS:
        return _value(value)
    return REDACTED, [value]


def _args(values: Sequence[str]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    after = ""  # the flag the previous argument was, when it takes this one as its value
    for arg in values:
        if after:
            out.append(_flag_value(after, arg))
            after = ""
            continue
        flag, eq, rest = arg.partition("=")
        if arg.startswith("-") and not _is_number(arg):
            if eq:
                value, secrets = _flag_value(flag, rest)
                out.append((f"{flag}={value}", secrets))
            else:
                out.append((arg, []))
                after = arg if _takes_secret(arg) else ""
            continue
        out.append(_value(arg))
    return out


def _takes_secret(flag: str) -> bool:
    return flag in _HEADER_FLAGS or flag in _ENV_FLAGS or bool(_CREDENTIAL_FLAG.search(flag.lstrip("-")))


def _flag_value(flag: str, value: str) -> tuple[str, list[str]]:
    if flag in _HEADER_FLAGS:
        shape = _HEADER_SHAPE.fullmatch(value)
        if shape is None:
            return REDACTED, [value]
        shown, secrets = _header(shape[1], shape[2])
        return f"{shape[1]}: {shown}", secrets
    if flag in _ENV_FLAGS:
        assignment = _ASSIGNMENT.fullmatch(value)
        return _value(value) if assignment is None else _assignment(assignment)
    if _CREDENTIAL_FLAG.search(flag.lstrip("-")):
        return REDACTED, [value]
    return _value(value)


def _value(value: str) -> tuple[str, list[str]]:
    """A value on its own: shown if it is structure (a word, name, path, number), else hidden."""
    if "PRIVATE KEY" in value:
        return REDACTED, [value]
    if _URL.fullmatch(value):
        return _url(value)
    if (shape := _HEADER_SHAPE.fullmatch(value)) and " " in value:
        shown, secrets = _header(shape[1], shape[2])
        return f"{shape[1]}: {shown}", secrets
    if assignment := _ASSIGNMENT.fullmatch(value):
        return _assignment(assignment)
    if any(c.isspace() for c in value):
        words = _args(value.split())
        return " ".join(shown for shown, _ in words), [s for _, secrets in words for s in secrets]
    if _keylike(value):
        return REDACTED, [value]
    return value, []


def _assignment(match: re.Match[str]) -> tuple[str, list[str]]:
    name, value = match[1], match[2]
    return (f"{name}={value}", []) if name in _SHOWN_ENV else (f"{name}={REDACTED}", [value])


def _keylike(value: str) -> bool:
    """20+ characters of letters and digits together, with no dots or slashes: a key, not a name."""
    return bool(_KEYLIKE.fullmatch(value)) and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
