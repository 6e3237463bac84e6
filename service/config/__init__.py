"""Every setting of the service: names, defaults, validation, start-time checks and key loading."""

from .schema import AUTH_MODES, REDIS_SCHEMES, SUPPORTED_NETWORKS
from .settings import ConfigError, Settings, load_settings

__all__ = ["AUTH_MODES", "REDIS_SCHEMES", "SUPPORTED_NETWORKS", "ConfigError", "Settings", "load_settings"]
