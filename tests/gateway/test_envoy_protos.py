"""Wire compatibility of gateway/policies/envoy_protos.py with Envoy's own messages.

The expected bytes are written out here, field by field, from the field numbers and types of the real
.proto files of envoyproxy/data-plane-api (each line names the file and quotes `type name = N`), with
a small encoder of protobuf's wire format that shares nothing with the module (and is itself checked
against one literal byte string). An Envoy proxy or an Envoy-compatible service produces and parses
these same bytes, since the wire format is only field numbers, wire types and values.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

from gateway.policies import envoy_protos as ep


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def vi(number: int, value: int) -> bytes:
    """A varint field (int32, int64, uint32, bool, enum): wire type 0."""
    return varint(number << 3 | 0) + varint(value)


def ld(number: int, *parts: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, map entry, packed): wire type 2."""
    payload = b"".join(parts)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry(key: bytes, value: bytes) -> bytes:
    """The body of one map<string, V> entry: key = 1, value = 2 (protobuf's map encoding)."""
    return ld(1, key) + ld(2, value)


def same(message: object, expected: bytes) -> None:
    """Our message serialises to exactly `expected`, and `expected` parses back to it."""
    assert message.SerializeToString(deterministic=True) == expected  # type: ignore[attr-defined]
    assert type(message).FromString(expected) == message  # type: ignore[attr-defined]


def test_the_encoder_matches_a_literal_encoding() -> None:
    # CheckResponse{status{code: 7}, denied_response{status{code: 403}, body: "no"}}, by hand:
    # 0a 02 | 08 07                    status (1, message): Status.code (1, varint) = 7
    # 12 09 | 0a 03 08 93 03 1a 02 6e 6f   denied_response (2): status (1): HttpStatus.code (1) = 403;
    #                                       body (3, string) = "no"
    literal = b"\x0a\x02\x08\x07\x12\x09\x0a\x03\x08\x93\x03\x1a\x02no"
    assert ld(1, vi(1, 7)) + ld(2, ld(1, vi(1, 403)) + ld(3, b"no")) == literal
    answer = ep.CheckResponse()
    answer.status.code = 7
    answer.denied_response.status.code = 403
    answer.denied_response.body = "no"
    same(answer, literal)


def test_check_request() -> None:
    # envoy/config/core/v3/address.proto: SocketAddress `string address = 2`, `uint32 port_value = 3`;
    # Address `SocketAddress socket_address = 1`.
    client = ld(1, ld(1, ld(2, b"10.0.0.1") + vi(3, 50000)))  # Peer `config.core.v3.Address address = 1`
    server = ld(1, ld(1, ld(2, b"127.0.0.1") + vi(3, 3000)))
    # envoy/service/auth/v3/attribute_context.proto, HttpRequest: string id = 1, method = 2,
    # map<string, string> headers = 3, path = 4, host = 5, scheme = 6, int64 size = 9, protocol = 10,
    # string body = 11, bytes raw_body = 12.
    http = (
        ld(1, b"req-1")
        + ld(2, b"POST")
        + ld(3, entry(b"x-user", b"ann"))
        + ld(4, b"/mcp?x=1")
        + ld(5, b"gw:3000")
        + ld(6, b"http")
        + vi(9, -1)  # int64 -1: ff ff ff ff ff ff ff ff ff 01 (a sint64 would be 01)
        + ld(10, b"HTTP/1.1")
        + ld(11, b"payload")
        + ld(12, b"\x00\xff")
    )
    # Request: google.protobuf.Timestamp time = 1 (seconds = 1, nanos = 2), HttpRequest http = 2.
    request = ld(1, vi(1, 1_700_000_000) + vi(2, 5)) + ld(2, http)
    # envoy/config/core/v3/base.proto, Metadata: map<string, google.protobuf.Struct> filter_metadata = 1;
    # google/protobuf/struct.proto: Struct map<string, Value> fields = 1, Value string_value = 3.
    claims = ld(1, entry(b"sub", ld(3, b"alice")))
    metadata = ld(1, entry(b"envoy.filters.http.jwt_authn", claims))
    # AttributeContext: Peer source = 1, destination = 2, Request request = 4,
    # map<string, string> context_extensions = 10, config.core.v3.Metadata metadata_context = 11.
    attributes = (
        ld(1, client) + ld(2, server) + ld(4, request) + ld(10, entry(b"mcp.method", b"tools/call")) + ld(11, metadata)
    )
    expected = ld(1, attributes)  # external_auth.proto, CheckRequest: AttributeContext attributes = 1

    context = ep.AttributeContext
    check = ep.CheckRequest(
        attributes=context(
            source=context.Peer(
                address=ep.Address(socket_address=ep.SocketAddress(address="10.0.0.1", port_value=50000))
            ),
            destination=context.Peer(
                address=ep.Address(socket_address=ep.SocketAddress(address="127.0.0.1", port_value=3000))
            ),
            request=context.Request(
                http=context.HttpRequest(
                    id="req-1",
                    method="POST",
                    headers={"x-user": "ann"},
                    path="/mcp?x=1",
                    host="gw:3000",
                    scheme="http",
                    size=-1,
                    protocol="HTTP/1.1",
                    body="payload",
                    raw_body=b"\x00\xff",
                )
            ),
            context_extensions={"mcp.method": "tools/call"},
        )
    )
    check.attributes.request.time.seconds = 1_700_000_000
    check.attributes.request.time.nanos = 5
    check.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update({"sub": "alice"})
    same(check, expected)


def test_check_response_ok() -> None:
    # envoy/config/core/v3/base.proto: HeaderValue `string key = 1`, `string value = 2`,
    # `bytes raw_value = 3`; HeaderValueOption `HeaderValue header = 1`,
    # `google.protobuf.BoolValue append = 2` (BoolValue `bool value = 1`),
    # `HeaderAppendAction append_action = 3` (ADD_IF_ABSENT = 1, OVERWRITE_IF_EXISTS = 3);
    # QueryParameter `string key = 1`, `string value = 2`.
    option = ld(1, ld(1, b"x-user") + ld(2, b"ann") + ld(3, b"\xfe")) + ld(2, vi(1, 1)) + vi(3, 3)
    # external_auth.proto, OkHttpResponse: repeated HeaderValueOption headers = 2,
    # repeated string headers_to_remove = 5, repeated QueryParameter query_parameters_to_set = 7,
    # repeated string query_parameters_to_remove = 8.
    ok = ld(2, option) + ld(5, b"authorization") + ld(7, ld(1, b"page") + ld(2, b"2")) + ld(8, b"debug")
    # CheckResponse: google.rpc.Status status = 1 (google/rpc/status.proto: `string message = 2`),
    # oneof http_response { DeniedHttpResponse denied_response = 2; OkHttpResponse ok_response = 3; }.
    expected = ld(1, ld(2, b"fine")) + ld(3, ok)

    answer = ep.CheckResponse()
    answer.status.message = "fine"
    header = answer.ok_response.headers.add(header=ep.HeaderValue(key="x-user", value="ann", raw_value=b"\xfe"))
    header.append.value = True
    header.append_action = ep.HeaderValueOption.OVERWRITE_IF_EXISTS
    answer.ok_response.headers_to_remove.append("authorization")
    answer.ok_response.query_parameters_to_set.add(key="page", value="2")
    answer.ok_response.query_parameters_to_remove.append("debug")
    same(answer, expected)
    assert answer.WhichOneof("http_response") == "ok_response"


def test_check_response_denied_with_headers() -> None:
    # DeniedHttpResponse: type.v3.HttpStatus status = 1 (http_status.proto: `StatusCode code = 1`),
    # repeated config.core.v3.HeaderValueOption headers = 2, string body = 3.
    denied = ld(1, vi(1, 401)) + ld(2, ld(1, ld(1, b"www-authenticate") + ld(2, b"Bearer"))) + ld(3, b"who?")
    expected = ld(1, vi(1, 16)) + ld(2, denied)  # Status.code (int32 code = 1) = 16 (UNAUTHENTICATED)

    answer = ep.CheckResponse()
    answer.status.code = 16
    answer.denied_response.status.code = 401
    answer.denied_response.headers.add(header=ep.HeaderValue(key="www-authenticate", value="Bearer"))
    answer.denied_response.body = "who?"
    same(answer, expected)


def test_rate_limit_request() -> None:
    # envoy/extensions/common/ratelimit/v3/ratelimit.proto, RateLimitDescriptor:
    # repeated Entry entries = 1; Entry `string key = 1`, `string value = 2`.
    first = ld(1, ld(1, b"tool") + ld(2, b"echo"))
    second = ld(1, ld(1, b"user") + ld(2, b"ann")) + ld(1, ld(1, b"path") + ld(2, b"/mcp"))
    # envoy/service/ratelimit/v3/rls.proto, RateLimitRequest: string domain = 1,
    # repeated envoy.extensions.common.ratelimit.v3.RateLimitDescriptor descriptors = 2.
    expected = ld(1, b"agentplex") + ld(2, first) + ld(2, second)

    request = ep.RateLimitRequest(domain="agentplex")
    request.descriptors.add().entries.add(key="tool", value="echo")
    both = request.descriptors.add()
    both.entries.add(key="user", value="ann")
    both.entries.add(key="path", value="/mcp")
    same(request, expected)


def test_rate_limit_response() -> None:
    # rls.proto, RateLimitResponse.RateLimit: uint32 requests_per_unit = 1, Unit unit = 2 (MINUTE = 2,
    # WEEK = 7). DescriptorStatus: Code code = 1 (OK = 1, OVER_LIMIT = 2), RateLimit current_limit = 2,
    # uint32 limit_remaining = 3, google.protobuf.Duration duration_until_reset = 4 (seconds = 1, nanos = 2).
    over = vi(1, 2) + ld(2, vi(1, 10) + vi(2, 2)) + ld(4, vi(1, 30) + vi(2, 500_000_000))
    ok = vi(1, 1) + ld(2, vi(1, 100) + vi(2, 7)) + vi(3, 42)
    # RateLimitResponse: Code overall_code = 1, repeated DescriptorStatus statuses = 2,
    # repeated config.core.v3.HeaderValue response_headers_to_add = 3, request_headers_to_add = 4,
    # bytes raw_body = 5.
    expected = (
        vi(1, 2)
        + ld(2, over)
        + ld(2, ok)
        + ld(3, ld(1, b"content-type") + ld(2, b"text/plain"))
        + ld(4, ld(1, b"x-rate") + ld(3, b"yes"))
        + ld(5, b"slow down")
    )

    answer = ep.RateLimitResponse(overall_code=ep.RateLimitResponse.OVER_LIMIT, raw_body=b"slow down")
    first = answer.statuses.add(code=ep.RateLimitResponse.OVER_LIMIT)
    first.current_limit.requests_per_unit = 10
    first.current_limit.unit = ep.RateLimitResponse.RateLimit.MINUTE
    first.duration_until_reset.seconds = 30
    first.duration_until_reset.nanos = 500_000_000
    second = answer.statuses.add(code=ep.RateLimitResponse.OK, limit_remaining=42)
    second.current_limit.requests_per_unit = 100
    second.current_limit.unit = ep.RateLimitResponse.RateLimit.WEEK
    answer.response_headers_to_add.add(key="content-type", value="text/plain")
    answer.request_headers_to_add.add(key="x-rate", raw_value=b"yes")
    same(answer, expected)
    assert first.duration_until_reset.ToTimedelta().total_seconds() == 30.5  # the well-known type helpers work


def test_fields_agentplex_does_not_declare_are_kept_not_refused() -> None:
    # A service's answer with fields left out of envoy_protos.py: OkHttpResponse
    # `repeated HeaderValueOption response_headers_to_add = 6` and CheckResponse
    # `google.protobuf.Struct dynamic_metadata = 4` (external_auth.proto); RateLimitResponse
    # `google.protobuf.Struct dynamic_metadata = 6` (rls.proto).
    ok = ld(5, b"cookie") + ld(6, ld(1, ld(1, b"x-seen") + ld(2, b"1")))
    check = ld(1, ld(2, b"fine")) + ld(3, ok) + ld(4, ld(1, entry(b"k", ld(3, b"v"))))
    answer = ep.CheckResponse.FromString(check)
    assert list(answer.ok_response.headers_to_remove) == ["cookie"]
    assert answer.SerializeToString() == check  # passed on unchanged
    limits = vi(1, 1) + ld(6, ld(1, entry(b"k", ld(3, b"v"))))
    assert ep.RateLimitResponse.FromString(limits).overall_code == ep.RateLimitResponse.OK


def test_method_paths_and_enum_numbers() -> None:
    # external_auth.proto `service Authorization { rpc Check(CheckRequest) returns (CheckResponse) }`;
    # rls.proto `service RateLimitService { rpc ShouldRateLimit(RateLimitRequest) returns (RateLimitResponse) }`.
    assert ep.CHECK.path == "/envoy.service.auth.v3.Authorization/Check"
    assert (ep.CHECK.request, ep.CHECK.response) == (ep.CheckRequest, ep.CheckResponse)
    assert ep.SHOULD_RATE_LIMIT.path == "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    assert (ep.SHOULD_RATE_LIMIT.request, ep.SHOULD_RATE_LIMIT.response) == (ep.RateLimitRequest, ep.RateLimitResponse)
    assert (ep.RateLimitResponse.UNKNOWN, ep.RateLimitResponse.OK, ep.RateLimitResponse.OVER_LIMIT) == (0, 1, 2)
    unit = ep.RateLimitResponse.RateLimit
    assert [unit.SECOND, unit.MINUTE, unit.HOUR, unit.DAY, unit.MONTH, unit.YEAR, unit.WEEK] == [1, 2, 3, 4, 5, 6, 7]
    option = ep.HeaderValueOption
    assert [
        option.APPEND_IF_EXISTS_OR_ADD,
        option.ADD_IF_ABSENT,
        option.OVERWRITE_IF_EXISTS_OR_ADD,
        option.OVERWRITE_IF_EXISTS,
    ] == [0, 1, 2, 3]
    # The real full names, in a private pool: nothing is added to protobuf's default pool.
    assert ep.CheckRequest.DESCRIPTOR.full_name == "envoy.service.auth.v3.CheckRequest"
    assert ep.CheckRequest.DESCRIPTOR.file.pool is ep.POOL
    assert ep.POOL is not descriptor_pool.Default()
