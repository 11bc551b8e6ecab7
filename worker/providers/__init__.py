"""Provider registry: a provider's name -> its settings model, adapter factory and capabilities.

Adding a provider is one new module (its settings model, adapter and `from_settings`
factory) and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from config.types import ProviderSettings
from worker.providers import daktela, phonely, voicenter, voodoosms, weya
from worker.providers.base import Capabilities, Provider


@dataclass(frozen=True)
class Registration:
    """What the rest of the worker knows of a provider without building it."""

    settings: type[ProviderSettings]
    #: Builds the adapter from the provider's own settings (None when it is off).
    factory: Callable[[Any, httpx.Client], Provider | None]
    #: The adapter's class: its capabilities, and whether it can list its blacklist.
    adapter: type[Any]

    @property
    def capabilities(self) -> Capabilities:
        caps: Capabilities = self.adapter.capabilities
        return caps

    @property
    def reconcilable(self) -> bool:
        """Reconciliation can compare its list with the ledger: it lists its numbers, and
        needs no call record to add one (a missing number could not be pushed again)."""
        return callable(getattr(self.adapter, "list_numbers", None)) and not (
            self.capabilities.needs_call_context
        )


REGISTRY: dict[str, Registration] = {
    "voicenter": Registration(
        voicenter.VoicenterSettings,
        voicenter.from_settings,
        voicenter.VoicenterProvider,
    ),
    "phonely": Registration(
        phonely.PhonelySettings, phonely.from_settings, phonely.PhonelyProvider
    ),
    "voodoosms": Registration(
        voodoosms.VoodooSmsSettings,
        voodoosms.from_settings,
        voodoosms.VoodooSmsProvider,
    ),
    "weya": Registration(weya.WeyaSettings, weya.from_settings, weya.WeyaProvider),
    "daktela": Registration(
        daktela.DaktelaSettings, daktela.from_settings, daktela.DaktelaProvider
    ),
}

#: Every provider's name, in a stable order.
PROVIDERS: tuple[str, ...] = tuple(REGISTRY)
#: Each provider's settings model (config reads them all at start).
SETTINGS: dict[str, type[ProviderSettings]] = {n: r.settings for n, r in REGISTRY.items()}
#: Each provider's capabilities, known without building it (the worker groups need them).
CAPABILITIES: dict[str, Capabilities] = {n: r.capabilities for n, r in REGISTRY.items()}
#: The providers reconciliation can compare with the ledger.
RECONCILABLE: tuple[str, ...] = tuple(n for n, r in REGISTRY.items() if r.reconcilable)


def build_providers(
    settings: Mapping[str, ProviderSettings], client_for: Callable[[str], httpx.Client]
) -> dict[str, Provider]:
    """Adapters for every provider whose credentials are set, each with its own client."""
    out: dict[str, Provider] = {}
    for name, registration in REGISTRY.items():
        own = settings.get(name)
        if own is None or not own.enabled:
            continue
        provider = registration.factory(own, client_for(name))
        if provider is not None:
            out[name] = provider
    return out
