"""Token checks: equal secrets match, anything else does not."""

from __future__ import annotations

from pydantic import SecretStr

from worker.ingress.tokens import same_secret


def test_only_the_secret_itself_matches() -> None:
    secret = SecretStr("s3cret-token")
    assert same_secret("s3cret-token", secret)
    for other in ("", "s3cret", "s3cret-token ", "S3CRET-TOKEN", "s3cret-tokenx"):
        assert not same_secret(other, secret), other
    assert same_secret("pässwort", SecretStr("pässwort"))  # not ASCII: compared as UTF-8
