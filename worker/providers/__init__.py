"""Provider registry: a provider name maps to the factory that builds its adapter.

Adding a provider is one new module with a `from_settings(settings, client)` factory and
one line here.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from config import Settings
from worker.providers import voicenter
from worker.providers.base import Provider

Factory = Callable[[Settings, httpx.Client], Provider | None]

FACTORIES: dict[str, Factory] = {
    "voicenter": voicenter.from_settings,
}


def build_providers(settings: Settings, client: httpx.Client) -> dict[str, Provider]:
    """Adapters for every provider whose credentials are set."""
    out: dict[str, Provider] = {}
    for name, factory in FACTORIES.items():
        provider = factory(settings, client)
        if provider is not None:
            out[name] = provider
    return out
