"""Ways in: the HTTP API, webhooks, the broker consumer and CSV import, each turning input into
accept events."""
