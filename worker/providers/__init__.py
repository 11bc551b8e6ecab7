"""Provider registry: a provider name maps to the factory that builds its adapter.

Adding a provider is one new module with a `from_settings(settings, client)` factory and
one line here.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from config import Settings
from worker.providers import daktela, phonely, voicenter, voodoosms, weya
from worker.providers.base import Capabilities, Provider

Factory = Callable[[Settings, httpx.Client], Provider | None]

FACTORIES: dict[str, Factory] = {
    "voicenter": voicenter.from_settings,
    "phonely": phonely.from_settings,
    "voodoosms": voodoosms.from_settings,
    "weya": weya.from_settings,
    "daktela": daktela.from_settings,
}


#: Each provider's capabilities, known without building it (the worker groups need them).
CAPABILITIES: dict[str, Capabilities] = {
    "voicenter": voicenter.VoicenterProvider.capabilities,
    "phonely": phonely.PhonelyProvider.capabilities,
    "voodoosms": voodoosms.VoodooSmsProvider.capabilities,
    "weya": weya.WeyaProvider.capabilities,
    "daktela": daktela.DaktelaProvider.capabilities,
}


def build_providers(
    settings: Settings, client_for: Callable[[str], httpx.Client]
) -> dict[str, Provider]:
    """Adapters for every provider whose credentials are set, each with its own client."""
    out: dict[str, Provider] = {}
    for name, factory in FACTORIES.items():
        if name not in settings.enabled_providers():
            continue
        provider = factory(settings, client_for(name))
        if provider is not None:
            out[name] = provider
    return out
