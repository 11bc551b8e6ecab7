"""Celery settings for Flower (compose's "flower" profile): where this service's broker is."""

import os

# The app's own: Sentinel URLs under compose.sentinel.yaml, which sets these variables too.
broker_url = os.environ.get("CELERY_BROKER_URL") or "redis://redis:6379/0"
# The app keeps its broker keys under the state's prefix (worker/runtime/celery_app.py):
# without it Flower would watch empty queues.
broker_transport_options = {
    "global_keyprefix": os.environ.get("OPTOUT_KEY_PREFIX", "optout:") + "broker:",
}
if os.environ.get("OPTOUT_REDIS_SENTINEL_MASTER"):
    broker_transport_options["master_name"] = os.environ["OPTOUT_REDIS_SENTINEL_MASTER"]
