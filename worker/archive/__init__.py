"""The audit archive: every audit entry, for the retention period, in a relational database
(PostgreSQL in production, SQLite embedded), filled from Redis's audit stream by workers."""
