"""OpenAPI targets (`targets[].openapi`, the reference's shape): a REST API the tests run (no MCP in it) served
as MCP tools — names, input and output schemas from its document, calls as HTTP requests, its 4xx as
tool errors — with backendAuth applied, and clear errors for documents that cannot be used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.config.errors import ConfigError
from protocols.openapi import operations, parse_document
from tests.conftest import http_server, mcp_yaml, run_gateway, sdk_session, stdio_target
from tests.fixtures.rest_api import DOCUMENT

pytestmark = pytest.mark.anyio


@pytest.fixture
def api() -> Iterator[str]:
    with http_server("tests.fixtures.rest_api", path="") as url:
        yield url




def target(api: str, schema: str) -> str:
    return f"""
  - name: pets
    openapi:
      schema: {schema}
      host: {api.removeprefix("http://")}"""


def test_the_documents_operations_become_tools_in_the_references_shapes() -> None:
    tools = {op.name: op for op in operations(parse_document(DOCUMENT, "doc"))}
    assert set(tools) == {"listPets", "addPet", "getPet", "echoHeaders"}
    get = tools["getPet"]
    assert (get.method, get.path, get.tool["description"]) == ("GET", "/pets/{petId}", "Find a pet by id")
    path = get.tool["inputSchema"]["properties"]["path"]
    assert path["properties"]["petId"] == {"type": "string", "description": "the pet's id"}  # path-level, via $ref
    assert path["required"] == ["petId"] and get.tool["inputSchema"]["required"] == ["path"]
    add = tools["addPet"].tool
    assert add["description"] == "Add a pet to the store" and add["inputSchema"]["required"] == ["body"]
    assert add["inputSchema"]["properties"]["body"] == {"$ref": "#/$defs/NewPet"}
    assert set(add["inputSchema"]["$defs"]) == {"NewPet", "Tag"}  # Tag refers to itself: kept as a reference
    assert tools["addPet"].headers == {"x-request-id"}
    listed = tools["listPets"].tool
    assert listed["outputSchema"]["properties"]["data"]["items"] == {"$ref": "#/$defs/Pet"}  # an array: under data


async def test_a_rest_api_served_as_tools_through_the_gateway(api: str, tmp_path: Path) -> None:
    schema = tmp_path / "pets.yaml"
    schema.write_text(DOCUMENT)
    config = mcp_yaml(target(api, f'{{file: "{schema}"}}') + stdio_target("local"))
    async with run_gateway(config) as gw, sdk_session(gw.url) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"pets_listPets", "pets_addPet", "pets_getPet", "local_echo"} <= set(tools)
        assert tools["pets_getPet"].description == "Find a pet by id"

        got = await session.call_tool("pets_getPet", {"path": {"petId": "1"}})
        assert not got.is_error and got.structured_content == {"id": "1", "name": "Rex", "tag": {"name": "dog"}}
        assert json.loads(got.content[0].text) == got.structured_content

        listed = await session.call_tool("pets_listPets", {"query": {"tag": "cat", "limit": 5}})
        assert listed.structured_content == {"data": [{"id": "2", "name": "Tom", "tag": {"name": "cat"}}]}

        added = await session.call_tool(
            "pets_addPet",
            {"body": {"name": "Kit", "tag": {"name": "cat"}}, "header": {"X-Request-Id": "r-7", "Host": "evil"}},
        )
        assert added.structured_content == {"name": "Kit", "tag": {"name": "cat"}, "id": "3", "requestId": "r-7"}

        missing = await session.call_tool("pets_getPet", {"path": {"petId": "../admin"}})  # encoded, not a path
        assert missing.is_error
        text = missing.content[0].text
        assert "failed with status 404 Not Found" in text and "no pet '../admin'" in text


async def test_backend_auth_and_a_document_fetched_from_a_url(api: str) -> None:
    policies = "{backendAuth: {key: {value: s3cret}}}"
    config = mcp_yaml(target(api, f'{{url: "{api}/openapi.yaml"}}'), policies=policies)
    async with run_gateway(config) as gw, sdk_session(gw.url) as session:
        seen = (await session.call_tool("echoHeaders", {})).structured_content
        assert seen["authorization"] == "Bearer s3cret" and seen["accept"] == "application/json"


async def test_an_inline_document_and_bad_documents_are_clear_config_errors(api: str, tmp_path: Path) -> None:
    inline = json.dumps(DOCUMENT)
    async with run_gateway(mcp_yaml(target(api, inline))) as gw, sdk_session(gw.url) as session:
        assert "getPet" in {t.name for t in (await session.list_tools()).tools}

    def refused(schema: str) -> str:
        with pytest.raises(ConfigError) as caught:
            Gateway(parse_config(mcp_yaml(target(api, schema)), "c.yaml"))
        return str(caught.value)

    assert "c.yaml: mcp.targets[0].openapi.schema.file: cannot read" in refused(f'{{file: "{tmp_path}/none.yaml"}}')
    assert "not an OpenAPI 3.x document" in refused(json.dumps("swagger: '2.0'\npaths: {}"))
    nameless = "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {/x: {get: {responses: {}}}}"
    assert "paths./x.get: an operationId is required" in refused(json.dumps(nameless))
    dangling = "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {/x: {get: {operationId: x, parameters: [{$ref: '#/components/parameters/Nope'}], responses: {}}}}"
    assert "names nothing in the document" in refused(json.dumps(dangling))
    assert "could not fetch the document" in refused(f'{{url: "{api}/missing.yaml"}}')
    with pytest.raises(ConfigError, match="openapi"):
        parse_config(mcp_yaml(target(api, "{file: x.yaml, bogus: 1}")), "c.yaml")


def test_reference_example_shape_parses() -> None:
    """The reference's examples/openapi shape: a file schema and `host: localhost:8080`."""
    config = parse_config(
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:\n"
        "          - name: openapi\n            openapi:\n              schema:\n                file: ./x.json\n"
        "              host: localhost:8080\n",
        "c.yaml",
    )
    openapi = config.binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].openapi  # type: ignore[union-attr]
    assert openapi is not None and openapi.host == "http://localhost:8080"
