"""Token checks of the HTTP layer, in constant time: the admin token, webhook tokens."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def same_secret(given: str, secret: SecretStr) -> bool:
    """Whether `given` is the secret; how long the comparison takes says nothing of how
    much of it matched."""
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
