"""Every fake provider wired for in-process pipeline tests: env, fakes, and a host router."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from tests.fakes.base import FakeProvider
from tests.fakes.daktela import FakeDaktela
from tests.fakes.phonely import FakePhonely
from tests.fakes.server import mock_transport
from tests.fakes.voicenter import FakeVoicenter
from tests.fakes.voodoosms import FakeVoodooSms
from tests.fakes.weya import FakeWeya

CALL = {"batchId": "64e5f12345abcdef98765432", "requestUUID": "550e8400-e29b-41d4"}


def env_for(name: str, base_url: str, key: str = "good-key") -> dict[str, str]:
    """The settings that turn one provider on against a fake at base_url."""
    return {
        "voicenter": {"VOICENTER_API_CODE": "good-code" if key == "good-key" else key,
                      "VOICENTER_BASE_URL": base_url},
        "phonely": {"PHONELY_API_KEY": key, "PHONELY_UID": "uid-1",
                    "PHONELY_AGENT_IDS": "agent-a,agent-b", "PHONELY_BASE_URL": base_url},
        "voodoosms": {"VOODOOSMS_API_KEY": key, "VOODOOSMS_BASE_URL": base_url},
        "weya": {"WEYA_API_TOKEN": key, "WEYA_BASE_URL": base_url},
        "daktela": {"DAKTELA_ACCESS_TOKEN": key, "DAKTELA_BASE_URL": base_url},
    }[name]  # fmt: skip


def make_fake(name: str) -> FakeProvider:
    fake: FakeProvider = {
        "voicenter": FakeVoicenter,
        "phonely": FakePhonely,
        "voodoosms": FakeVoodooSms,
        "weya": FakeWeya,
        "daktela": FakeDaktela,
    }[name]()
    if isinstance(fake, FakeWeya):
        fake.call_records.add((CALL["batchId"], CALL["requestUUID"]))
    return fake


def targets_of(name: str) -> list[str]:
    return {
        "voicenter": ["voicenter"],
        "phonely": ["phonely:agent-a", "phonely:agent-b"],
        "voodoosms": ["voodoosms"],
        "weya": ["weya"],
        "daktela": ["daktela:Global"],
    }[name]


def listed(fake: FakeProvider, target: str) -> set[str]:
    """Digits the fake's list for `target` holds."""
    if isinstance(fake, FakePhonely):
        return fake.listed(target.split(":", 1)[1])
    if isinstance(fake, FakeDaktela):
        return fake.listed(target.split(":", 1)[1])
    return fake.listed()


def preload(fake: FakeProvider, target: str, digits: str) -> None:
    """Put a number on the fake's list as if someone had added it before us."""
    if isinstance(fake, FakeDaktela):
        fake.records["pre_" + digits] = {
            "name": "pre_" + digits, "number": "+" + digits, "description": "manual",
            "database": "Global", "expired": None,
        }  # fmt: skip
    elif isinstance(fake, FakeVoodooSms):
        fake.listed().add(digits)
        fake.ids[digits] = 999_000 + len(fake.ids)
    else:
        listed(fake, target).add(digits)


@dataclass
class Router:
    """One httpx client for all providers, routed by host to each fake."""

    fakes: dict[str, FakeProvider] = field(default_factory=dict)
    timeouts: int = 0  # the next N requests (any host) time out

    def client(self) -> httpx.Client:
        def transport(request: httpx.Request) -> httpx.Response:
            if self.timeouts > 0:
                self.timeouts -= 1
                raise httpx.ReadTimeout("injected", request=request)
            fake = self.fakes[request.url.host.split(".")[0]]
            return mock_transport(fake.handle).handle_request(request)

        return httpx.Client(transport=httpx.MockTransport(transport))
