"""The audit entries table and its indexes: a number's history newest first, a time range."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("entry_id", sa.String(64), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index(
        "audit_entries_number_at", "audit_entries",
        ["number", sa.text("at DESC"), sa.text("seq DESC")],
    )  # fmt: skip
    op.create_index("audit_entries_at", "audit_entries", ["at", "seq"])


def downgrade() -> None:
    op.drop_index("audit_entries_at", "audit_entries")
    op.drop_index("audit_entries_number_at", "audit_entries")
    op.drop_table("audit_entries")
