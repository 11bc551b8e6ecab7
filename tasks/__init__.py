"""Celery tasks: thin wrappers that deserialise, call worker/, and declare retry policy."""
