"""The pipeline context: what it derives from settings."""

from __future__ import annotations

from tests.fakes.dispatch import QueueDispatcher


def test_the_in_flight_cap_is_the_providers_concurrency_or_two_per_worker_process() -> None:
    import fakeredis

    from tests.conftest import make_settings
    from worker.runtime.wiring import build_context

    env = {"VOICENTER_API_CODE": "good-code", "VOICENTER_BASE_URL": "http://voicenter.test"}
    capped = make_settings({**env, "OPTOUT_PROVIDER_LIMITS": "voicenter=10/3"})
    uncapped = make_settings(
        {**env, "OPTOUT_PROVIDER_LIMITS": "voicenter=0/0", "OPTOUT_WORKER_CONCURRENCY": "5"}
    )
    for settings, cap in ((capped, 3), (uncapped, 10)):
        ctx = build_context(settings, client=fakeredis.FakeRedis(), dispatcher=QueueDispatcher())
        assert ctx.max_in_flight("voicenter") == cap
