"""The `optout` command line, one module per command group."""
