"""agentgateway-style local config (YAML or JSON): models, loading, and readable errors."""

from .errors import ConfigError
from .loader import load_config, parse_config
from .models import (
    Backend,
    Bind,
    Config,
    GlobalSettings,
    HttpTarget,
    Listener,
    LoggingSettings,
    Match,
    McpBackend,
    McpShort,
    PathMatch,
    Policies,
    Route,
    StdioTarget,
    Target,
)
from .policies import TimeoutPolicy
from .units import parse_byte_size, parse_duration

__all__ = [
    "Backend",
    "Bind",
    "Config",
    "ConfigError",
    "GlobalSettings",
    "HttpTarget",
    "Listener",
    "LoggingSettings",
    "Match",
    "McpBackend",
    "McpShort",
    "PathMatch",
    "Policies",
    "Route",
    "StdioTarget",
    "Target",
    "TimeoutPolicy",
    "load_config",
    "parse_byte_size",
    "parse_config",
    "parse_duration",
]
