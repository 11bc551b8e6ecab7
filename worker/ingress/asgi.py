"""The API as an importable ASGI factory, for `optout api --workers N` and other servers."""

from __future__ import annotations

from fastapi import FastAPI

from worker.ingress.api import create_api
from worker.runtime import logs, wiring


def create() -> FastAPI:
    """This process's API over this process's pipeline (settings read from the environment).
    Server processes start afresh: logging (with its masking) is set up here, not inherited."""
    logs.configure(wiring.settings().log_format)
    return create_api(wiring.context)
