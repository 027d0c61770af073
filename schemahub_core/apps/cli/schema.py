"""``schemahub schema check|propose``: schema drift in the raw tables, and the change it calls for."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx

if TYPE_CHECKING:
    from schemahub_core.engine.maintenance import BackfillReport


@click.group(name="schema")
def schema_group() -> None:
    """Fields venues send that their streams don't declare (and declared ones that stop arriving)."""


@schema_group.command(name="check")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of drifting fields.")
@pass_ctx
def schema_check(ctx: Context, as_json: bool) -> None:
    """Report schema drift in every raw table: new fields (count, example, first seen) and missing ones.

    Ingest counts both in each commit's snapshot summary; this adds them up over the
    snapshots each table keeps. Exits 1 while a venue sends a field no stream declares,
    so cron and CI notice. Type drift (text where a number was) goes to quarantine.
    """
    from schemahub_core.apps.schema import check

    found = check(ctx.catalog(), ctx.settings.namespace, ctx.registry)
    if as_json:
        emit_json([f.as_dict() for f in found])
    elif not found:
        console.print("no schema drift: every record carried exactly its stream's declared fields", highlight=False)
    else:
        table = Table(title="schema drift in raw tables")
        for col in ("source.stream", "field", "kind", "records", "first seen", "last seen", "example", "now"):
            table.add_column(col, no_wrap=col in ("records", "kind"))
        for f in found:
            table.add_row(escape(f"{f.source}.{f.stream}"), escape(f.field),
                          "new (undeclared)" if f.kind == "new" else "missing", f"{f.records:,}/{f.of_records:,}",
                          f.first_seen[:19], f.last_seen[:19], escape(repr(f.example)) if f.kind == "new" else "",
                          ("still sent" if f.kind == "new" else "still missing") if f.still else "stopped")
        console.print(table)
        console.print("propose the change with `schemahub schema propose`", highlight=False)
    if any(f.kind == "new" for f in found):
        sys.exit(1)


@schema_group.command(name="propose")
@click.option("--apply", "do_apply", is_flag=True,
              help="Validate, add the nullable raw column (Iceberg schema evolution, no rewrite), write the "
                   "stream override into config/streams/, the mapping patch into config/mappings/ and, where a "
                   "target has no such column, add it (nullable) and declare it in config/targets/.")
@click.option("--backfill", "do_backfill", is_flag=True,
              help="With --apply: also fill the new raw columns of rows landed before from their _raw_payload "
                   "(rewrites exactly those data files, one commit).")
@click.option("--json", "as_json", is_flag=True, help="Print the proposals (and what was applied) as JSON.")
@pass_ctx
def schema_propose(ctx: Context, do_apply: bool, do_backfill: bool, as_json: bool) -> None:
    """Propose (dry run) or apply the change each new field calls for.

    \b
    For each field a venue sends that its stream does not declare:
      - a stream-schema addition (user override in config/streams/; the plugin author adds the same Column);
      - the raw table's evolution: a nullable column, old rows read null;
      - a mapping patch into each unified target the stream maps into: to the target's column of
        that name, or else to a new nullable column of the target (old rows read null).
    """
    from schemahub_core.apps.schema import apply, backfill, check, propose
    from schemahub_core.framework.mapping import MappingError

    if do_backfill and not do_apply:
        fail("--backfill fills the columns --apply adds: give both (or run `schemahub schema backfill` later)")
    registry = ctx.registry
    proposals = propose(check(ctx.catalog(), ctx.settings.namespace, registry), registry, ctx.settings)
    done: list[str] = []
    filled: list[BackfillReport] = []
    if do_apply and proposals:
        try:
            done = apply(proposals, ctx.catalog(), ctx.settings, registry)
        except MappingError as exc:
            fail(f"the patched mapping does not validate, nothing applied: {exc}")
        if do_backfill:
            filled = backfill(ctx.catalog(), ctx.settings, ctx.registry,
                              only=[(p.source, p.stream, p.field) for p in proposals])
    if as_json:
        emit_json({"proposals": [p.as_dict() for p in proposals], "applied": done,
                   "backfilled": [r.as_dict() for r in filled]})
        _exit_on_backfill_error(filled)
        return
    if not proposals:
        console.print("nothing to propose: no stream is missing a field its venue sends", highlight=False)
        return
    for p in proposals:
        console.print(f"[bold]{escape(p.source)}.{escape(p.stream)}[/]: new field [bold]{escape(p.field)}[/]",
                      highlight=False)
        cast = f", cast {p.column['cast']}" if p.column.get("cast") else ""
        console.print(f"  stream  add Column({p.field!r}, {p.column['type']}{cast})", highlight=False, markup=False)
        console.print(f"  raw     {p.raw_table}: add nullable column {p.field}", highlight=False, markup=False)
        for m in p.mappings:
            if m["new_column"]:
                console.print(f"  target  {m['target']}: add nullable column {p.field} ({p.column['type']}); "
                              "rows unified before read null", highlight=False, markup=False)
            console.print(f"  mapping {m['target']}: {m['maps']} (written to {m['file']})", highlight=False,
                          markup=False)
        for target in p.not_mapped:
            console.print(f"  mapping {target} already maps {p.field}", highlight=False, markup=False)
    if done:
        for line in done:
            console.print(f"[green]applied[/] {escape(line)}", highlight=False)
        _print_backfill(filled)
    else:
        console.print("dry run: add --apply to make these changes", highlight=False)


def _print_backfill(reports: list[BackfillReport]) -> None:
    for r in reports:
        if r.error:
            continue
        console.print(f"[green]backfilled[/] {escape(r.table)}.{escape(r.column)}: {r.rows_filled:,} null(s) filled "
                      f"from _raw_payload, {r.files_rewritten} of {r.files_checked} file(s) with nulls rewritten "
                      f"({r.rows_rewritten:,} rows)", highlight=False)
    _exit_on_backfill_error(reports)


def _exit_on_backfill_error(reports: list[BackfillReport]) -> None:
    errors = [f"{r.table}.{r.column}: {r.error}" for r in reports if r.error]
    if errors:
        fail("; ".join(errors))


@schema_group.command(name="backfill")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per column.")
@pass_ctx
def schema_backfill(ctx: Context, as_json: bool) -> None:
    """Fill the raw columns `schema propose --apply` added from each old row's _raw_payload.

    
    For every column in config/streams/: the data files where it is null and the row's
    payload carries the field are rewritten with it filled, in one overwrite commit per
    table (rows neither lost nor doubled; coverage and unify progress carried). A payload
    without the field leaves null. A rerun finds nothing left to fill.
    """
    from schemahub_core.apps.schema import backfill

    reports = backfill(ctx.catalog(), ctx.settings, ctx.registry)
    if as_json:
        emit_json([r.as_dict() for r in reports])
        _exit_on_backfill_error(reports)
        return
    if not reports:
        console.print("nothing to backfill: no column added by config/streams/ is in a raw table", highlight=False)
        return
    _print_backfill(reports)
