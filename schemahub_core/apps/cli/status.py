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


def _complete(share: float | None, gaps: int) -> str:
    if share is None:
        return ""
    color = "green" if not gaps else "red"
    return f"[{color}]{share:.3%}[/]" + (f" ({gaps} gaps)" if gaps else "")


def _ranges(spans: list[dict]) -> str:
    """``since .. until`` per line: the merged covered ranges, or the holes between them."""
    return "\n".join(f"{s['since']} .. {s['until']}" for s in spans)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Per source/symbol: covered time ranges and the holes between them, cursor, last trade, lag, rows,
    completeness (see `schemahub audit`), last snapshot; per target: what it consumed.
    `run ingest --since A --until B` fills a hole."""
    from datetime import UTC, datetime

    from schemahub_core.apps.audit import run_audit
    from schemahub_core.engine.migrate import MigrationNeeded
    from schemahub_core.engine.migrate import check as check_migrations
    from schemahub_core.engine.state import unify_rows, watermark_rows
    from schemahub_core.engine.tables import table_defs
    from schemahub_core.sandbox.market import MARKET_END, MARKET_START

    catalog = ctx.catalog()
    try:  # an old layout would show one stream's coverage as another's
        check_migrations(catalog, ctx.settings.namespace, ctx.registry)
    except MigrationNeeded as exc:
        fail(str(exc))
    now = datetime.now(UTC)
    sources = watermark_rows(catalog, ctx.settings.namespace, ctx.registry)
    audited, why = None, None
    try:  # completeness is extra information: a broken mapping file must not hide the rest of the status
        audited = run_audit(ctx.settings, ctx.registry, catalog=catalog, reconcile=False) if sources else None
    except Exception as exc:
        why = f"completeness not computed: {exc}"
    shares = audited.completeness() if audited else {}
    for r in sources:
        r["lag_seconds"] = round((now - r["last_ts"]).total_seconds(), 3) if r["last_ts"] else None
        key = (r["source"], r["stream"], r["symbol"])
        r["completeness"] = round(shares[key], 6) if key in shares else None
        r["gaps"] = sum(1 for g in audited.gaps if (g.source, g.stream, g.symbol) == key) if audited else 0
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
                                   r["rows"])), _complete(r["completeness"], r["gaps"]), plain(r["snapshot_id"] or ""))
    console.print(table)
    table = Table(title="unified targets")
    for col in ("target", "source table", "consumed snapshot", "raw snapshot", "state", "target rows"):
        table.add_column(col, no_wrap=col in ("target", "source table"), overflow="fold")
    for r in targets:
        table.add_row(*map(plain, (r["target"], r["source_table"], r["consumed_snapshot_id"], r["raw_snapshot_id"])),
                      "[green]up to date[/]" if r["up_to_date"] else "[yellow]new raw data[/]",
                      plain(r["target_rows"]))
    console.print(table)
