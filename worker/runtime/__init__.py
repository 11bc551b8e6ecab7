"""Process plumbing: the Celery app, the broker transport, per-process wiring, logs, embedded
Redis."""
