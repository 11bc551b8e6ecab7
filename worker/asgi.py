"""`worker.asgi:create`, the factory name servers were configured with before the API moved to
worker.ingress.asgi: kept so that they keep serving across an upgrade."""

from worker.ingress.asgi import create

__all__ = ["create"]
