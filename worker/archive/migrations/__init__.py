"""Alembic's migrations of the archive (applied by worker/archive/database.py: migrate)."""
