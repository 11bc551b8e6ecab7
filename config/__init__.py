"""Settings for optout-worker, read from the environment once and passed down."""

from config.settings import ConfigError, Settings, kombu_url, load_settings, routes_allow

__all__ = ["ConfigError", "Settings", "kombu_url", "load_settings", "routes_allow"]
