"""``schemahub status``: per venue and symbol, what has landed."""

from __future__ import annotations

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, err_console, fail, pass_ctx, plain


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _complete(r: dict) -> str:
    """The last audit's figure, its gaps and age; ``stale`` when raw took data after it."""
    share = r["completeness"]
    if share is None:
        return "[dim]not audited[/]"
    color = "green" if not r["gaps"] else "red"
    text = f"[{color}]{share:.3%}[/]" + (f" ({r['gaps']} gaps)" if r["gaps"] else "")
    return text + f"\naudit {_age(r['audit_age_seconds'])} ago" + (" [yellow]stale[/]" if r["audit_stale"] else "")


def _ranges(spans: list[dict]) -> str:
    """``since .. until`` per line: the merged covered ranges, or the holes between them."""
    return "\n".join(f"{s['since']} .. {s['until']}" for s in spans)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Per source/symbol: covered time ranges and the holes between them, cursor, last trade, lag, rows,
    completeness as the last `schemahub audit` found it (with its age), last snapshot; per target: what it
    consumed.
    `run ingest --since A --until B` fills a hole."""
    from datetime import UTC, datetime

    from pyiceberg.table import Table as IcebergTable

    from schemahub_core.apps.audit import changed_since, last_audit
    from schemahub_core.engine.migrate import MigrationNeeded
    from schemahub_core.engine.migrate import check as check_migrations
    from schemahub_core.engine.state import unify_rows, watermark_rows
    from schemahub_core.engine.tables import raw_table_name, table_defs
    from schemahub_core.sandbox.market import MARKET_END, MARKET_START

    catalog = ctx.catalog()
    try:  # an old layout would show one stream's coverage as another's
        check_migrations(catalog, ctx.settings.namespace, ctx.registry)
    except MigrationNeeded as exc:
        fail(str(exc))
    now = datetime.now(UTC)
    sources = watermark_rows(catalog, ctx.settings.namespace, ctx.registry)
    why = None
    try:  # completeness is extra information: an unreadable summary must not hide the rest of the status
        audited = last_audit(ctx.settings)
    except ValueError as exc:
        audited, why = {}, f"completeness not shown: {exc}"
    tables: dict[str, IcebergTable | None] = {}
    for r in sources:
        r["lag_seconds"] = round((now - r["last_ts"]).total_seconds(), 3) if r["last_ts"] else None
        last = audited.get(f"{r['source']}.{r['stream']}.{r['symbol']}")
        r["completeness"] = last["completeness"] if last else None
        r["gaps"] = last["gaps"] if last else None
        r["audited_at"] = last["audited_at"] if last else None
        r["audit_window"] = [last["since"] or last["first_day"], last["until"] or last["last_day"]] if last else None
        r["audit_age_seconds"] = round((now - datetime.fromisoformat(last["audited_at"])).total_seconds(), 3) \
            if last else None
        name = raw_table_name(r["source"], r["stream"])
        if last and name not in tables:
            tables[name] = catalog.load_table((ctx.settings.namespace, name)) if catalog.table_exists(
                (ctx.settings.namespace, name)) else None
        r["audit_stale"] = bool(last and tables[name] is not None and changed_since(tables[name], last))
    targets = unify_rows(catalog, ctx.settings.namespace, ctx.registry)
    if as_json:
        emit_json({"sources": sources, "targets": targets, **({"completeness_error": why} if why else {})})
        return
    if why:
        err_console.print(plain(why), highlight=False)
    if not sources and not targets:
        if any(catalog.table_exists((ctx.settings.namespace, t.name)) for t in table_defs(ctx.registry)
               if t.name.startswith("raw_")):
            console.print("no data has landed yet: the runs so far fetched nothing. Check their window: "
                          "--since/--until are compared with the venue's clock (the sandbox's market starts "
                          f"{MARKET_START:%Y-%m-%d} and its clock at {MARKET_END:%Y-%m-%d}: use dates there, "
                          "e.g. --since 2024-02-08T15:00:00Z --until 2024-02-08T16:00:00Z)", highlight=False)
        else:
            console.print("nothing ingested yet: try `schemahub run pipeline trades_unified --since 15m`",
                          highlight=False)
        return
    table = Table(title="sources (coverage from raw snapshots)")
    for col in ("source", "stream", "symbol", "covered", "holes", "cursor", "last trade", "lag", "rows", "complete",
                "last snapshot"):
        table.add_column(col, no_wrap=col in ("source", "stream", "symbol"), overflow="fold")
    for r in sources:
        lag = _age(r["lag_seconds"])
        table.add_row(*map(plain, (r["source"], r["stream"], r["symbol"], _ranges(r["covered"]),
                                   _ranges(r["holes"]) or "none", r["cursor"] or "", r["last_ts"] or "", lag,
                                   r["rows"])), _complete(r), plain(r["snapshot_id"] or ""))
    console.print(table)
    if any(r["completeness"] is not None for r in sources):
        console.print("complete: from the last `schemahub audit` of each symbol (its age below the figure; stale: "
                      "raw took data since, audit again)", highlight=False)
    else:
        console.print("complete: run `schemahub audit` for each symbol's completeness", highlight=False)
    table = Table(title="unified targets")
    for col in ("target", "source table", "consumed snapshot", "raw snapshot", "state", "target rows"):
        table.add_column(col, no_wrap=col in ("target", "source table"), overflow="fold")
    for r in targets:
        table.add_row(*map(plain, (r["target"], r["source_table"], r["consumed_snapshot_id"], r["raw_snapshot_id"])),
                      "[green]up to date[/]" if r["up_to_date"] else "[yellow]new raw data[/]",
                      plain(r["target_rows"]))
    console.print(table)
