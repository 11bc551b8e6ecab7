"""optout-worker: durable, idempotent opt-out propagation to provider blacklists.

`celery -A worker worker` finds the app in `worker.celery`.
"""
