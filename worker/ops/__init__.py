"""Operations: dead letters, reconciliation, the compliance SLA, the admin HTTP API, metrics."""
