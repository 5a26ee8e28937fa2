"""The few Envoy API messages agentplex sends and reads (ext_authz v3 Check, rate-limit service v3
ShouldRateLimit), described in code with protobuf's own descriptor API instead of the `xds-protos`
package (whose wheel also installs top-level `cel`, `opentelemetry`, `google`, `udpa` and `validate`
packages over those of other distributions).

Each message keeps the real package, name, field names, field numbers and types of the .proto file it
mirrors (named in a comment), so the bytes on the wire are those of Envoy's generated code: protobuf's
wire format is field number + wire type, nothing else. Only the fields agentplex reads or writes are
declared; a field the peer sends that is not declared here is kept as an unknown field by the parser
(and sent on by a re-serialisation), never an error. The classes behave like generated ones
(`CheckRequest(attributes=...)`, `AttributeContext.HttpRequest`, `RateLimitResponse.OVER_LIMIT`) and
live in a private descriptor pool, so they never clash with another definition of the same names.

To verify a field number, open the named file in envoyproxy/data-plane-api (the same file is under
`api/` in envoyproxy/envoy), e.g. envoy/service/auth/v3/external_auth.proto, find the message and
compare `type name = N;` with the `_field("name", N, ...)` line here. tests/gateway/test_envoy_protos.py
checks every declared field against byte strings written out by hand from those numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

_F = descriptor_pb2.FieldDescriptorProto
STRING, BYTES, INT32, INT64, UINT32 = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32
ENUM, MESSAGE = _F.TYPE_ENUM, _F.TYPE_MESSAGE


def _field(
    name: str, number: int, kind: int, type_name: str = "", repeated: bool = False, oneof: int | None = None
) -> _F:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name  # fully qualified, with the leading dot
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _enum(name: str, **values: int) -> descriptor_pb2.EnumDescriptorProto:
    return descriptor_pb2.EnumDescriptorProto(
        name=name, value=[descriptor_pb2.EnumValueDescriptorProto(name=k, number=v) for k, v in values.items()]
    )


def _message(
    full_name: str,
    *fields: _F,
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
    enums: tuple[descriptor_pb2.EnumDescriptorProto, ...] = (),
    oneofs: tuple[str, ...] = (),
    maps: tuple[tuple[str, int, int, str], ...] = (),
) -> descriptor_pb2.DescriptorProto:
    """A message; each of `maps` is (name, number, value type, value type name) of a map<string, V> field."""
    name = full_name.rsplit(".", 1)[1]
    message = descriptor_pb2.DescriptorProto(name=name, field=fields, nested_type=nested, enum_type=enums)
    message.oneof_decl.extend(descriptor_pb2.OneofDescriptorProto(name=o) for o in oneofs)
    for map_name, number, kind, type_name in maps:
        # what protoc makes of `map<string, V> name = N;`: a repeated nested NameEntry {key = 1; value = 2;}
        entry = "".join(part.capitalize() for part in map_name.split("_")) + "Entry"
        message.nested_type.append(
            descriptor_pb2.DescriptorProto(
                name=entry,
                field=[_field("key", 1, STRING), _field("value", 2, kind, type_name)],
                options=descriptor_pb2.MessageOptions(map_entry=True),
            )
        )
        message.field.append(_field(map_name, number, MESSAGE, f".{full_name}.{entry}", repeated=True))
    return message


def _file(
    path: str,
    deps: tuple[str, ...],
    *messages: descriptor_pb2.DescriptorProto,
    enums: tuple[descriptor_pb2.EnumDescriptorProto, ...] = (),
    services: tuple[descriptor_pb2.ServiceDescriptorProto, ...] = (),
) -> descriptor_pb2.FileDescriptorProto:
    """One .proto file; its package is its directory (as in every file mirrored here)."""
    return descriptor_pb2.FileDescriptorProto(
        name=path,
        package=path.rsplit("/", 1)[0].replace("/", "."),
        dependency=deps,
        syntax="proto3",
        message_type=messages,
        enum_type=enums,
        service=services,
    )


def _service(name: str, method: str, request: str, response: str) -> descriptor_pb2.ServiceDescriptorProto:
    return descriptor_pb2.ServiceDescriptorProto(
        name=name, method=[descriptor_pb2.MethodDescriptorProto(name=method, input_type=request, output_type=response)]
    )


WKT = (struct_pb2, duration_pb2, timestamp_pb2, wrappers_pb2)  # as protobuf ships them (google/protobuf/*.proto)
_CORE = "envoy.config.core.v3"
_AUTH = "envoy.service.auth.v3"
_RLS = "envoy.service.ratelimit.v3"
_RL_COMMON = "envoy.extensions.common.ratelimit.v3"

_FILES = [
    _file(
        "google/rpc/status.proto",  # googleapis; details (3, repeated Any) is not declared
        (),
        _message("google.rpc.Status", _field("code", 1, INT32), _field("message", 2, STRING)),
    ),
    _file(
        "envoy/type/v3/http_status.proto",
        (),
        # StatusCode is an open (proto3) enum: any code travels and reads back as its number, so only
        # its zero value is declared (Unauthorized = 401, Forbidden = 403, ... are the HTTP codes).
        _message("envoy.type.v3.HttpStatus", _field("code", 1, ENUM, ".envoy.type.v3.StatusCode")),
        enums=(_enum("StatusCode", Empty=0),),
    ),
    _file(
        "envoy/config/core/v3/address.proto",  # only the socket form of Address
        (),
        _message(
            f"{_CORE}.SocketAddress",
            _field("address", 2, STRING),
            _field("port_value", 3, UINT32, oneof=0),
            oneofs=("port_specifier",),
        ),
        _message(
            f"{_CORE}.Address",
            _field("socket_address", 1, MESSAGE, f".{_CORE}.SocketAddress", oneof=0),
            oneofs=("address",),
        ),
    ),
    _file(
        "envoy/config/core/v3/base.proto",
        ("google/protobuf/struct.proto", "google/protobuf/wrappers.proto"),
        # Metadata.typed_filter_metadata (2) and HeaderValueOption.keep_empty_value (4) are not declared.
        _message(f"{_CORE}.Metadata", maps=(("filter_metadata", 1, MESSAGE, ".google.protobuf.Struct"),)),
        _message(f"{_CORE}.QueryParameter", _field("key", 1, STRING), _field("value", 2, STRING)),
        _message(
            f"{_CORE}.HeaderValue", _field("key", 1, STRING), _field("value", 2, STRING), _field("raw_value", 3, BYTES)
        ),
        _message(
            f"{_CORE}.HeaderValueOption",
            _field("header", 1, MESSAGE, f".{_CORE}.HeaderValue"),
            _field("append", 2, MESSAGE, ".google.protobuf.BoolValue"),
            _field("append_action", 3, ENUM, f".{_CORE}.HeaderValueOption.HeaderAppendAction"),
            enums=(
                _enum(
                    "HeaderAppendAction",
                    APPEND_IF_EXISTS_OR_ADD=0,
                    ADD_IF_ABSENT=1,
                    OVERWRITE_IF_EXISTS_OR_ADD=2,
                    OVERWRITE_IF_EXISTS=3,
                ),
            ),
        ),
    ),
    _file(
        "envoy/service/auth/v3/attribute_context.proto",
        ("envoy/config/core/v3/address.proto", "envoy/config/core/v3/base.proto", "google/protobuf/timestamp.proto"),
        # Not declared: Peer.service, labels, principal, certificate (2-5); HttpRequest.query (7),
        # fragment (8), header_map (13); route_metadata_context (13), tls_session (12).
        _message(
            f"{_AUTH}.AttributeContext",
            _field("source", 1, MESSAGE, f".{_AUTH}.AttributeContext.Peer"),
            _field("destination", 2, MESSAGE, f".{_AUTH}.AttributeContext.Peer"),
            _field("request", 4, MESSAGE, f".{_AUTH}.AttributeContext.Request"),
            _field("metadata_context", 11, MESSAGE, f".{_CORE}.Metadata"),
            maps=(("context_extensions", 10, STRING, ""),),
            nested=(
                _message(f"{_AUTH}.AttributeContext.Peer", _field("address", 1, MESSAGE, f".{_CORE}.Address")),
                _message(
                    f"{_AUTH}.AttributeContext.Request",
                    _field("time", 1, MESSAGE, ".google.protobuf.Timestamp"),
                    _field("http", 2, MESSAGE, f".{_AUTH}.AttributeContext.HttpRequest"),
                ),
                _message(
                    f"{_AUTH}.AttributeContext.HttpRequest",
                    _field("id", 1, STRING),
                    _field("method", 2, STRING),
                    _field("path", 4, STRING),
                    _field("host", 5, STRING),
                    _field("scheme", 6, STRING),
                    _field("size", 9, INT64),
                    _field("protocol", 10, STRING),
                    _field("body", 11, STRING),
                    _field("raw_body", 12, BYTES),
                    maps=(("headers", 3, STRING, ""),),
                ),
            ),
        ),
    ),
    _file(
        "envoy/service/auth/v3/external_auth.proto",
        (
            "envoy/config/core/v3/base.proto",
            "envoy/service/auth/v3/attribute_context.proto",
            "envoy/type/v3/http_status.proto",
            "google/rpc/status.proto",
        ),
        # Not declared (agentplex does not apply them): OkHttpResponse.dynamic_metadata (3),
        # response_headers_to_add (6); CheckResponse.dynamic_metadata (4).
        _message(f"{_AUTH}.CheckRequest", _field("attributes", 1, MESSAGE, f".{_AUTH}.AttributeContext")),
        _message(
            f"{_AUTH}.DeniedHttpResponse",
            _field("status", 1, MESSAGE, ".envoy.type.v3.HttpStatus"),
            _field("headers", 2, MESSAGE, f".{_CORE}.HeaderValueOption", repeated=True),
            _field("body", 3, STRING),
        ),
        _message(
            f"{_AUTH}.OkHttpResponse",
            _field("headers", 2, MESSAGE, f".{_CORE}.HeaderValueOption", repeated=True),
            _field("headers_to_remove", 5, STRING, repeated=True),
            _field("query_parameters_to_set", 7, MESSAGE, f".{_CORE}.QueryParameter", repeated=True),
            _field("query_parameters_to_remove", 8, STRING, repeated=True),
        ),
        _message(
            f"{_AUTH}.CheckResponse",
            _field("status", 1, MESSAGE, ".google.rpc.Status"),
            _field("denied_response", 2, MESSAGE, f".{_AUTH}.DeniedHttpResponse", oneof=0),
            _field("ok_response", 3, MESSAGE, f".{_AUTH}.OkHttpResponse", oneof=0),
            oneofs=("http_response",),
        ),
        services=(_service("Authorization", "Check", f".{_AUTH}.CheckRequest", f".{_AUTH}.CheckResponse"),),
    ),
    _file(
        "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        (),
        # RateLimitDescriptor.limit (2) and later additions are not declared.
        _message(
            f"{_RL_COMMON}.RateLimitDescriptor",
            _field("entries", 1, MESSAGE, f".{_RL_COMMON}.RateLimitDescriptor.Entry", repeated=True),
            nested=(
                _message(
                    f"{_RL_COMMON}.RateLimitDescriptor.Entry", _field("key", 1, STRING), _field("value", 2, STRING)
                ),
            ),
        ),
    ),
    _file(
        "envoy/service/ratelimit/v3/rls.proto",
        (
            "envoy/config/core/v3/base.proto",
            "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
            "google/protobuf/duration.proto",
        ),
        # Not declared: RateLimitRequest.hits_addend (3); RateLimit.name (3); DescriptorStatus.quota (5);
        # RateLimitResponse.dynamic_metadata (6), quota (7).
        _message(
            f"{_RLS}.RateLimitRequest",
            _field("domain", 1, STRING),
            _field("descriptors", 2, MESSAGE, f".{_RL_COMMON}.RateLimitDescriptor", repeated=True),
        ),
        _message(
            f"{_RLS}.RateLimitResponse",
            _field("overall_code", 1, ENUM, f".{_RLS}.RateLimitResponse.Code"),
            _field("statuses", 2, MESSAGE, f".{_RLS}.RateLimitResponse.DescriptorStatus", repeated=True),
            _field("response_headers_to_add", 3, MESSAGE, f".{_CORE}.HeaderValue", repeated=True),
            _field("request_headers_to_add", 4, MESSAGE, f".{_CORE}.HeaderValue", repeated=True),
            _field("raw_body", 5, BYTES),
            enums=(_enum("Code", UNKNOWN=0, OK=1, OVER_LIMIT=2),),
            nested=(
                _message(
                    f"{_RLS}.RateLimitResponse.RateLimit",
                    _field("requests_per_unit", 1, UINT32),
                    _field("unit", 2, ENUM, f".{_RLS}.RateLimitResponse.RateLimit.Unit"),
                    enums=(_enum("Unit", UNKNOWN=0, SECOND=1, MINUTE=2, HOUR=3, DAY=4, MONTH=5, YEAR=6, WEEK=7),),
                ),
                _message(
                    f"{_RLS}.RateLimitResponse.DescriptorStatus",
                    _field("code", 1, ENUM, f".{_RLS}.RateLimitResponse.Code"),
                    _field("current_limit", 2, MESSAGE, f".{_RLS}.RateLimitResponse.RateLimit"),
                    _field("limit_remaining", 3, UINT32),
                    _field("duration_until_reset", 4, MESSAGE, ".google.protobuf.Duration"),
                ),
            ),
        ),
        services=(
            _service("RateLimitService", "ShouldRateLimit", f".{_RLS}.RateLimitRequest", f".{_RLS}.RateLimitResponse"),
        ),
    ),
]

POOL = descriptor_pool.DescriptorPool()
for _module in WKT:
    POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(_module.DESCRIPTOR.serialized_pb))
for _proto in _FILES:
    POOL.Add(_proto)


def _class(full_name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


# Well-known types of this pool (a message of the default pool's struct_pb2.Struct cannot be copied in).
Struct = _class("google.protobuf.Struct")
BoolValue = _class("google.protobuf.BoolValue")
Duration = _class("google.protobuf.Duration")
Timestamp = _class("google.protobuf.Timestamp")

Status = _class("google.rpc.Status")
HttpStatus = _class("envoy.type.v3.HttpStatus")
SocketAddress = _class("envoy.config.core.v3.SocketAddress")
Address = _class("envoy.config.core.v3.Address")
Metadata = _class("envoy.config.core.v3.Metadata")
QueryParameter = _class("envoy.config.core.v3.QueryParameter")
HeaderValue = _class("envoy.config.core.v3.HeaderValue")
HeaderValueOption = _class("envoy.config.core.v3.HeaderValueOption")
AttributeContext = _class("envoy.service.auth.v3.AttributeContext")
CheckRequest = _class("envoy.service.auth.v3.CheckRequest")
DeniedHttpResponse = _class("envoy.service.auth.v3.DeniedHttpResponse")
OkHttpResponse = _class("envoy.service.auth.v3.OkHttpResponse")
CheckResponse = _class("envoy.service.auth.v3.CheckResponse")
RateLimitDescriptor = _class("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor")
RateLimitRequest = _class("envoy.service.ratelimit.v3.RateLimitRequest")
RateLimitResponse = _class("envoy.service.ratelimit.v3.RateLimitResponse")


@dataclass(frozen=True)
class Method:
    """One unary gRPC method: what a channel's `unary_unary` and a server's generic handler need."""

    service: str  # fully qualified, e.g. envoy.service.auth.v3.Authorization
    name: str
    request: Any
    response: Any

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _method(service: str, name: str) -> Method:
    method = POOL.FindServiceByName(service).methods_by_name[name]
    return Method(service, name, _class(method.input_type.full_name), _class(method.output_type.full_name))


CHECK = _method("envoy.service.auth.v3.Authorization", "Check")
SHOULD_RATE_LIMIT = _method("envoy.service.ratelimit.v3.RateLimitService", "ShouldRateLimit")
