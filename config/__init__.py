"""Settings for optout-worker, read from the environment once and passed down."""

from config.settings import ConfigError, Settings, kombu_url, load_settings

__all__ = ["ConfigError", "Settings", "kombu_url", "load_settings"]
