"""`frontendPolicies` (top level, the reference's `LocalFrontendPolicies`): policies for every request the
gateway serves, before routing. agentplex builds `accessLog` (and its alias `logging`); the reference's
other frontend policies are refused at their key ("not supported by agentplex yet"), never ignored.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .ai import NotYet
from .base import _Model, _problem_at
from .policies import CelExpr


class AccessLogPolicy(_Model):
    """Which requests get an access line (`filter`: CEL, true to log) and its fields: `add` (name: CEL over
    the request and its answer), `remove` (field names)."""

    filter: CelExpr | None = None
    add: dict[str, CelExpr] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)
    otlp: NotYet("sending access logs over OTLP") = None
    database: NotYet("keeping access logs in a database") = None


class FrontendPolicies(_Model):
    accessLog: AccessLogPolicy | None = None
    logging: AccessLogPolicy | None = None  # the reference's alias of accessLog
    tracing: NotYet("tracing as a frontend policy (config.tracing traces every request)") = None
    http: NotYet("HTTP server settings as a frontend policy") = None
    tls: NotYet("TLS settings as a frontend policy (a listener's tls sets them)") = None
    tcp: NotYet("TCP keep-alive settings") = None
    networkAuthorization: NotYet("networkAuthorization") = None
    networkExtAuthz: NotYet("networkExtAuthz") = None
    proxy: NotYet("proxy") = None
    proxyProtocol: NotYet("proxyProtocol") = None
    connect: NotYet("connect") = None

    @model_validator(mode="after")
    def _one_access_log(self) -> FrontendPolicies:
        if self.accessLog is not None and self.logging is not None:
            raise _problem_at(("logging",), "is the reference's other name for accessLog: set one of them")
        return self

    @property
    def access_log(self) -> AccessLogPolicy | None:
        return self.accessLog or self.logging
