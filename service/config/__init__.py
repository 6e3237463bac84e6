"""Every setting of the service: names, defaults, validation, start-time checks and key loading."""

from .schema import SUPPORTED_NETWORKS
from .settings import ConfigError, Settings, load_settings

__all__ = ["SUPPORTED_NETWORKS", "ConfigError", "Settings", "load_settings"]
