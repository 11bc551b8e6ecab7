"""`python -m worker.cli`: the `optout` command line, as supervisors respawn children."""

from worker.cli.main import main

main()
