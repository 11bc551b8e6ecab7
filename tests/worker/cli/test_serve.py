"""What `optout up` says about the providers: each that is on with its targets, or how to
turn one on."""

from __future__ import annotations

from tests.conftest import make_settings
from worker.cli.serve import _providers


def test_each_provider_on_is_named_with_its_targets() -> None:
    settings = make_settings({
        "VOICENTER_API_CODE": "code",
        "PHONELY_API_KEY": "key", "PHONELY_UID": "uid", "PHONELY_AGENT_IDS": "a1,a2",
    })  # fmt: skip
    assert _providers(settings) == (
        "voicenter (targets: voicenter), phonely (targets: phonely:a1, phonely:a2)"
    )


def test_with_none_on_it_says_how_to_turn_one_on() -> None:
    assert _providers(make_settings({})) == (
        "none (opt-outs wait in the ledger): set e.g. VOICENTER_API_CODE"
    )
