"""The pipeline context: what it derives from settings."""

from __future__ import annotations

from tests.fakes.dispatch import QueueDispatcher
from worker.pipeline.context import Context, DeploymentTarget


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


def test_the_deployment_is_every_announced_target_and_this_processs_own(ctx: Context) -> None:
    ctx.store.register_targets({"phonely:a": {"provider": "phonely"}}, 60)  # another process
    assert ctx.deployment() == {
        "phonely:a": DeploymentTarget("phonely", live=True, here=False),
        # Enabled here, but this process has not announced it: nothing is pushed there yet.
        "voicenter": DeploymentTarget("voicenter", live=False, here=True),
    }
    ctx.ensure_registered(force=True)
    assert ctx.deployment()["voicenter"] == DeploymentTarget("voicenter", live=True, here=True)
