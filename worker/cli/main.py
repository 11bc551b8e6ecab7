"""The `optout` command line: run the service, inspect numbers and dead letters, review CDRs."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli import archive, data, dlq, inspect, provider, review, serve
from worker.cli.common import Verbosity, group, hand_over_counts

app = group(help="optout-worker: durable opt-out propagation.", no_args_is_help=True)
app.add_typer(serve.app)
app.add_typer(data.app)
app.add_typer(inspect.app)
app.add_typer(provider.commands)
app.add_typer(dlq.app, name="dlq")
app.add_typer(provider.app, name="provider")
app.add_typer(review.app, name="review")
app.add_typer(archive.app, name="archive")
app.add_typer(archive.audit, name="audit")


@app.callback()
def options(
    command: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log lines on stderr: a command's (else in DATA_DIR/logs/cli.log), and with "
            "`up` its parts' too (always in DATA_DIR/logs/optout.log). api, worker, beat "
            "and consume always log to stderr.",
        ),
    ] = False,
) -> None:
    """optout-worker: durable opt-out propagation."""
    Verbosity.on = verbose
    command.call_on_close(hand_over_counts)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
