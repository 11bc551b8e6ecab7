"""`optout review`: the inputs kept for a person (list, show), accepted as opt-outs or dropped."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from worker.cli.common import count_of, err, group, open_context, who
from worker.cli.output import Col, JsonOpt, columns, listing, say, table

app = group(
    help="CDRs kept for a person because their customer cannot be told safely: list, show, "
    "accept (opt out the number you choose) or drop.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="As review list shows it.")]
NoteOpt = Annotated[
    str, typer.Option(metavar="TEXT", help="Why, for the audit trail (up to 200 characters).")
]

T = TypeVar("T")

#: Exit status of each refusal: the operator's input is wrong (2), or the case is not
#: there / settled otherwise (1).
_EXIT = {"not_found": 1, "accepted_for_another_number": 1, "store_unavailable": 1}


def _run(action: Callable[[], T]) -> T:
    """A review action, or exit with its refusal said plainly."""
    import redis

    from worker.ops.reviews import ReviewError

    try:
        return action()
    except ReviewError as exc:
        err.print(exc.message, highlight=False, markup=False, style="red")
        raise typer.Exit(_EXIT.get(exc.reason, 2)) from None
    except redis.RedisError as exc:
        err.print(f"Redis unavailable: {type(exc).__name__}", style="red")
        raise typer.Exit(1) from None


@app.command("list")
def review_list(
    source: Annotated[
        str | None, typer.Option(metavar="SOURCE", help="Only this source (voicenter).")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="Show at most N.")] = 100,
    as_json: Annotated[bool, JsonOpt] = False,
) -> None:
    """Cases waiting, oldest first: why each needs a person and the numbers found in it."""
    from worker.ops import reviews

    ctx = open_context()
    cases = _run(lambda: reviews.kept(ctx, source))
    records = _run(lambda: [reviews.view(ctx, case) for case in cases[:limit]])
    title = f"reviews waiting: {len(cases)}"
    if len(records) < len(cases):
        title += f" (showing the oldest {len(records)}; --limit)"
    # Times and numbers are read whole like the id: a narrow window shows a block a case.
    cols = [Col("id", whole=True), Col("received_at", whole=True), Col("reason"),
            Col("phones", whole=True)]  # fmt: skip
    listing(title, cols, records, as_json)


@app.command("show")
def review_show(
    review_id: IdArg,
    as_json: Annotated[bool, typer.Option("--json", help="The case as one JSON object.")] = False,
) -> None:
    """One case in full: why, the call, each number found in it, and the input itself."""
    from worker.ops import reviews

    ctx = open_context()
    case = _run(lambda: reviews.view(ctx, reviews.find(ctx, review_id), full=True))
    if as_json:
        typer.echo(json.dumps(case, sort_keys=True))
        return
    _print_case(case)


def _print_case(case: dict[str, Any]) -> None:
    fields = [
        ("id", case["id"]),
        ("source", case["source"]),
        ("received_at", case["received_at"]),
        ("reason", case["reason"]),
        ("detail", case["detail"]),
        ("call_id", case["call_id"]),
        ("call_time", case["call_time"]),
        ("call_type", case["call_type"]),
        ("direction", case["direction"]),
    ]
    table(None, columns("field", "value", whole=2), fields)
    found = [(c["field"], c["value"], c.get("phone"), c.get("rejected"))
             for c in case["candidates"]]  # fmt: skip
    if found:
        table("numbers found", columns("field", "value", "phone", "rejected", whole=3), found,
              after=True)  # fmt: skip
    else:
        say("numbers found: none")
    say("input:")
    typer.echo(json.dumps(case["input"], indent=2, sort_keys=True, ensure_ascii=False))


@app.command("accept")
def review_accept(
    review_id: IdArg,
    phone: Annotated[
        str | None,
        typer.Option(
            metavar="NUMBER",
            help="The customer's number, national or E.164 (may be left out when the case "
            "has exactly one candidate).",
        ),
    ] = None,
    note: NoteOpt = "",
) -> None:
    """Opt out the number you chose for a case, as the call's own opt-out (dated at the
    call, so a later opt-in of the number still wins), and take the case off the queue."""
    from worker.ops import reviews

    ctx = open_context()
    done = _run(lambda: reviews.accept_review(ctx, review_id, phone, who(), note))
    _say_accepted(done)


def _say_accepted(done: dict[str, Any]) -> None:
    phone, event = done["phone"], done["event_id"]
    if done["duplicate"]:
        typer.echo(f"{done['id']}: {phone} was opted out for this call already (event "
                   f"{event}); the case is off the queue")  # fmt: skip
    elif done["ledger"] == "stale":
        typer.echo(f"{done['id']}: accepted (event {event}), but {phone} was opted in after "
                   f"the call ({done['occurred_at']}): the later opt-in stands, nothing is "
                   "pushed")  # fmt: skip
    else:
        typer.echo(f"{done['id']}: {phone} opted out (event {event}, ledger {done['ledger']}, "
                   f"dated {done['occurred_at']})")  # fmt: skip


@app.command("drop")
def review_drop(review_id: IdArg, note: NoteOpt = "") -> None:
    """Take a case off the queue without an opt-out (recorded with who and the note)."""
    from worker.ops import reviews

    ctx = open_context()
    done = _run(lambda: reviews.drop_review(ctx, review_id, who(), note))
    typer.echo(f"{done['id']}: dropped")
    left = sum(reviews.waiting(ctx).values())
    say(f"{count_of(left, 'review')} waiting")
