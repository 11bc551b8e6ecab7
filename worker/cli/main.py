"""The `optout` command line: run the service, inspect numbers and dead letters, review CDRs."""

from __future__ import annotations

from worker.cli import data, dlq, inspect, provider, review, serve
from worker.cli.common import group

app = group(help="optout-worker: durable opt-out propagation.", no_args_is_help=True)
app.add_typer(serve.app)
app.add_typer(data.app)
app.add_typer(inspect.app)
app.add_typer(provider.commands)
app.add_typer(dlq.app, name="dlq")
app.add_typer(provider.app, name="provider")
app.add_typer(review.app, name="review")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
