"""Settings for optout-worker, read from the environment once and passed down."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
