"""An OpenAPI 3.x document as MCP tools, and a tool call as the HTTP request it stands for.

The shapes are the reference's (agentgateway `mcp/upstream/openapi`), so a config moved between the
two gives clients the same tools: one tool per operation, named by its `operationId`, described by its
description (else summary, else name); its input is an object with `path`, `query` and `header`
objects (the operation's parameters, path-level ones included, operation-level ones winning) and
`body` (an `application/json` request body). `$ref`s to `#/components/...` are resolved; schemas that
refer to each other (or to themselves) keep their references, under `$defs`. Cookie parameters are
not offered. agentplex adds `outputSchema` from the 2xx JSON response (a non-object answer is wrapped
as `{"data": ...}`, as the result is).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BLOCKED_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "host", "connection"})
_COMPONENT = "#/components/"


class OpenApiError(ValueError):
    """The document cannot be turned into tools (the message says where)."""


@dataclass(frozen=True)
class Operation:
    """One tool: its MCP definition, and where and how a call of it goes."""

    name: str
    method: str  # upper case
    path: str  # the document's path template, e.g. /pets/{petId}
    tool: dict[str, Any]  # name, description, inputSchema, outputSchema?
    headers: frozenset[str] = field(default_factory=frozenset)  # header parameters it may send (lower case)


def parse_document(text: str, where: str) -> dict[str, Any]:
    """A JSON or YAML OpenAPI 3.x document."""
    import yaml  # JSON is YAML too; only loaded when an OpenAPI target is configured

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OpenApiError(f"{where}: not JSON or YAML: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
        raise OpenApiError(f"{where}: not an OpenAPI 3.x document (no `openapi: 3.x` at its top)")
    if not isinstance(doc.get("paths"), dict):
        raise OpenApiError(f"{where}: has no `paths`")
    return doc


def server_prefix(doc: dict[str, Any]) -> str:
    """The path every operation's path follows: that of the one `servers` entry ("" without one)."""
    servers = doc.get("servers") or []
    if len(servers) > 1:
        raise OpenApiError(f"several `servers` are not supported ({[s.get('url') for s in servers]})")
    if not servers:
        return ""
    url = str(servers[0].get("url", ""))
    path = urlsplit(url).path if "://" in url else url
    return path.rstrip("/")


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, as a tool."""
    refs = _Refs(doc)
    found: list[Operation] = []
    for path, item in doc["paths"].items():
        item = refs.resolve(item)
        if not isinstance(item, dict):
            continue
        shared = [refs.resolve(p) for p in item.get("parameters", [])]
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            name = op.get("operationId")
            if not name:
                raise OpenApiError(f"paths.{path}.{method}: an operationId is required (it names the tool)")
            parameters = _merged(shared, [refs.resolve(p) for p in op.get("parameters", [])])
            found.append(_operation(refs, str(name), method, path, op, parameters))
    return found


def _merged(shared: list[Any], own: list[Any]) -> list[dict[str, Any]]:
    """Path-level parameters, replaced by operation-level ones of the same name and place (headers: any case)."""

    def key(p: dict[str, Any]) -> tuple[str, str]:
        name = str(p.get("name", ""))
        return str(p.get("in", "")), name.lower() if p.get("in") == "header" else name

    merged = {key(p): p for p in shared if isinstance(p, dict)}
    for p in own:
        if isinstance(p, dict):
            merged.pop(key(p), None)
            merged[key(p)] = p
    return list(merged.values())


def _operation(refs: _Refs, name: str, method: str, path: str, op: dict[str, Any], params: list[dict[str, Any]]) -> Operation:
    properties: dict[str, Any] = {}
    required: list[str] = []
    body = refs.resolve(op.get("requestBody")) if op.get("requestBody") else None
    media = (body or {}).get("content", {}).get("application/json")
    if isinstance(media, dict) and "schema" in media:
        properties["body"] = refs.schema(media["schema"])
        if body.get("required"):
            required.append("body")
    headers: set[str] = set()
    for place in ("path", "query", "header"):
        group = [p for p in params if p.get("in") == place]
        if not group:
            continue
        props: dict[str, Any] = {}
        needed = []
        for p in group:
            schema = refs.schema(p.get("schema", {}))
            if p.get("description"):
                schema = {**schema, "description": p["description"]}
            props[p["name"]] = schema
            if p.get("required") or place == "path":
                needed.append(p["name"])
            if place == "header":
                headers.add(str(p["name"]).lower())
        properties[place] = {"type": "object", "properties": props, "required": needed}
        if needed:
            required.append(place)
    tool: dict[str, Any] = {
        "name": name,
        "description": op.get("description") or op.get("summary") or name,
        "inputSchema": refs.with_defs({"type": "object", "properties": properties, "required": required}),
    }
    output = _output_schema(refs, op)
    if output is not None:
        tool["outputSchema"] = refs.with_defs(output)
    return Operation(name, method.upper(), path, tool, frozenset(headers))


def _output_schema(refs: _Refs, op: dict[str, Any]) -> dict[str, Any] | None:
    """The first 2xx response's JSON schema, as an object (wrapped under `data` when it is not one)."""
    for status, response in sorted((op.get("responses") or {}).items()):
        if not str(status).startswith("2"):
            continue
        media = (refs.resolve(response) or {}).get("content", {}).get("application/json")
        if not isinstance(media, dict) or "schema" not in media:
            return None
        schema = refs.schema(media["schema"])
        target = refs.resolve(media["schema"])
        kind = target.get("type") if isinstance(target, dict) else None
        if kind in ("array", "string", "number", "integer", "boolean", "null"):  # answers that are not objects
            return {"type": "object", "properties": {"data": schema}, "required": ["data"]}
        return schema if kind == "object" else {"type": "object", "allOf": [schema]}  # MCP wants type: object on top
    return None


class _Refs:
    """Resolves `#/components/...` references; schemas keep theirs, rewritten to `#/$defs/<name>`."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.used: dict[str, Any] = {}

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise OpenApiError(f"only references within the document are supported, not {ref!r}")
        node: Any = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise OpenApiError(f"reference {ref!r} names nothing in the document")
            node = node[part]
        return node

    def resolve(self, node: Any) -> Any:
        """A parameter, request body, response or path item, its `$ref` followed (a few hops at most)."""
        for _ in range(16):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            node = self.lookup(node["$ref"])
        raise OpenApiError("a chain of references does not end")

    def schema(self, node: Any) -> Any:
        """A copy of the schema whose component references point into `$defs` (collected as found)."""
        if isinstance(node, list):
            return [self.schema(n) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMPONENT + "schemas/"):
            name = ref[len(_COMPONENT + "schemas/") :]
            if name not in self.used:
                self.used[name] = None  # placeholder first: a schema may refer to itself
                self.used[name] = self.schema(self.lookup(ref))
            return {**{k: copy.deepcopy(v) for k, v in node.items() if k != "$ref"}, "$ref": f"#/$defs/{name}"}
        if isinstance(ref, str):
            return self.schema(self.lookup(ref))
        return {key: self.schema(value) for key, value in node.items()}

    def with_defs(self, schema: dict[str, Any]) -> dict[str, Any]:
        """`schema` with the components it refers to (and only those) under `$defs`."""
        wanted: dict[str, Any] = {}
        pending = _refs_in(schema)
        while pending:
            name = pending.pop()
            if name in wanted or name not in self.used:
                continue
            wanted[name] = self.used[name]
            pending |= _refs_in(wanted[name])
        return {**schema, "$defs": wanted} if wanted else schema


def _refs_in(node: Any) -> set[str]:
    text = json.dumps(node)
    found: set[str] = set()
    marker = '"$ref": "#/$defs/'
    start = text.find(marker)
    while start >= 0:
        end = text.find('"', start + len(marker))
        found.add(text[start + len(marker) : end])
        start = text.find(marker, end)
    return found


@dataclass(frozen=True)
class HttpCall:
    """The request a tool call stands for."""

    method: str
    path: str  # with its query string
    headers: dict[str, str]
    body: bytes | None


def http_call(op: Operation, prefix: str, arguments: dict[str, Any]) -> HttpCall:
    """Fill the path template (each value percent-encoded whole), the query (booleans as true/false,
    arrays repeated) and the operation's own header parameters; the body is `body` as JSON."""
    path = op.path
    for key, value in _object(arguments.get("path")).items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            path = path.replace("{" + key + "}", quote(str(value), safe=""))
    pairs = []
    for key, value in _object(arguments.get("query")).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                item = "true" if item else "false"
            if isinstance(item, (str, int, float)):
                pairs.append(f"{quote(str(key), safe='')}={quote(str(item), safe='')}")
    headers = {"accept": "application/json"}
    for key, value in _object(arguments.get("header")).items():
        name = str(key).lower()
        if isinstance(value, str) and name in op.headers and name not in BLOCKED_HEADERS:
            headers[name] = value
    body = None
    if "body" in arguments:
        body = json.dumps(arguments["body"]).encode()
        headers["content-type"] = "application/json"
    full = prefix.rstrip("/") + (path if path.startswith("/") else "/" + path)
    return HttpCall(op.method, full + ("?" + "&".join(pairs) if pairs else ""), headers, body)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def structured(answer: Any) -> dict[str, Any]:
    """A JSON answer as structured content: an object as it is, anything else under `data`."""
    return answer if isinstance(answer, dict) else {"data": answer}
