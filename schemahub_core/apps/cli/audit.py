"""``schemahub audit``: completeness of every venue's trades, per day, and ``--repair`` for what is missing."""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import click
from rich import box
from rich.table import Table

from schemahub_core.apps.cli.context import (
    Context,
    console,
    emit_json,
    err_console,
    fail,
    parse_time,
    pass_ctx,
    plain,
)
from schemahub_core.framework.config import ConfigError
from schemahub_core.framework.mapping import MappingError

SHOWN_GAPS = 20


def _cell(day: Any) -> str:
    """One heatmap cell: green complete, red trades missing, yellow doubled or unreconciled, blue not unified yet."""
    if day.missing or day.time_holes:
        return "[red]█[/]"
    if day.problems:
        return "[yellow]█[/]"
    if day.pending:
        return "[blue]█[/]"
    return "[green]█[/]"


def _when(moment: Any) -> str:
    return moment.strftime("%m-%d %H:%M:%S.%f")[:-3]


def _render(report: Any, title: str) -> None:
    if not report.days:
        console.print("nothing to audit: no trades landed in that window (try `schemahub run pipeline trades_unified`)")
        return
    days = sorted({d.day for d in report.days})
    rows: dict[tuple[str, str], dict] = defaultdict(dict)
    for d in report.days:
        rows[(d.source, d.symbol)][d.day] = d
    console.print(f"[bold]{title}[/]: {days[0]} .. {days[-1]}, one cell per day "
                  "([green]█[/] complete, [red]█[/] missing, [yellow]█[/] doubled or unreconciled, "
                  "[blue]█[/] not unified yet)")
    heat = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    heat.add_column("source", no_wrap=True)
    heat.add_column("days", no_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("source", no_wrap=True)
    for col in ("raw rows", "missing", "holes", "dups", "unrec.", "complete"):
        table.add_column(col, justify="right", no_wrap=True)
    completeness = report.completeness()
    for (source, symbol), per_day in sorted(rows.items()):
        ds = list(per_day.values())
        heat.add_row(plain(f"{source} {symbol}"), "".join(_cell(per_day[day]) if day in per_day else "[dim]·[/]"
                                                    for day in days))
        share = completeness.get((source, ds[0].stream, symbol), 1.0)
        bad = sum(d.problems for d in ds)
        table.add_row(plain(f"{source} {symbol}"), f"{sum(d.raw_rows for d in ds):,}",
                      f"{sum(d.missing for d in ds):,}",
                      str(sum(d.time_holes for d in ds)), str(sum(d.raw_duplicates + d.unified_duplicates for d in ds)),
                      str(sum(d.not_unified + d.not_in_raw for d in ds)),
                      f"[{'green' if not bad else 'red'}]{share:.3%}[/]")
    console.print(heat)
    console.print(table)
    if report.gaps:
        gaps = Table(title="gaps", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        gaps.add_column("source", no_wrap=True)
        gaps.add_column("missing ids", no_wrap=True)
        gaps.add_column("count", justify="right", no_wrap=True)
        gaps.add_column("after the trade at", no_wrap=True)
        for g in report.gaps[:SHOWN_GAPS]:
            ids = f"{g.first_id}..{g.last_id}" if g.kind == "ids" else f"time hole after {g.id_before or ''}"
            span = (g.time_after - g.time_before).total_seconds()
            gaps.add_row(plain(f"{g.source} {g.symbol}"), plain(ids), str(g.count or ""),
                         f"{_when(g.time_before)} +{span:.1f}s")
        console.print(gaps)
        if len(report.gaps) > SHOWN_GAPS:
            console.print(f"... and {len(report.gaps) - SHOWN_GAPS} more gaps (--json lists them all)")
    pending = sum(d.pending for d in report.days)
    if pending:
        console.print(f"{pending:,} raw rows are not unified yet (run `schemahub run unify trades_unified`)")
    for name, count in sorted(report.quarantined.items()):
        console.print(f"{name}: {count:,} records in schemahub_quarantine (they never reached raw)")
    verdict = "[green]complete[/]" if report.clean else "[red]incomplete[/]"
    console.print(f"{verdict}: {report.rows_read:,} key rows read in {report.seconds:.2f} s")


@click.command()
@click.option("--since", help="Audit trades at or after this time: ISO-8601 or relative (15m, 2h, 7d).")
@click.option("--until", help="Audit trades before this time (exclusive).")
@click.option("--symbols", help="Comma-separated canonical symbols; SOURCE:SYMBOL for one source only "
              "(default: every symbol landed).")
@click.option("--repair", is_flag=True, help="Fetch the missing trades again through the venues' connectors, land "
              "them exactly once, unify, and audit again.")
@click.option("--hole-factor", type=click.FloatRange(min=1.0), default=4.0, show_default=True,
              help="Time hole = an interval longer than this many times the symbol's 99th-percentile interval "
              "(venues without contiguous ids).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def audit(ctx: Context, since: str | None, until: str | None, symbols: str | None, repair: bool,
          hole_factor: float, as_json: bool) -> None:
    """Per venue, symbol and day: rows in raw and unified, id range, missing ids, time holes, duplicates,
    and raw<->unified reconciliation. Exits 1 while anything is missing or doubled (for cron and CI)."""
    from schemahub_core.apps.audit import run_audit, run_repair
    from schemahub_core.framework.connector import ConnectorError

    chosen = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    kwargs = {"symbols": chosen, "hole_factor": hole_factor}
    try:
        kwargs.update(since=parse_time(since), until=parse_time(until))
        result = (run_repair if repair else run_audit)(ctx.settings, ctx.registry, **kwargs)
    except (KeyError, ValueError, ConfigError, MappingError, ConnectorError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
        return
    report = result.after if repair else result
    if as_json:
        emit_json(result.as_dict())
    else:
        if repair:
            _render(result.before, "before repair")
            for r in result.repairs:
                line = (f"repaired {r.source} {r.symbol}: {r.gaps} gaps, {r.fetched:,} fetched, {r.landed:,} landed"
                        f" in {r.seconds:.2f} s")
                (err_console if r.error else console).print(line + (f" [red]error: {r.error}[/]" if r.error else ""),
                                                            highlight=False)
            _render(report, "after repair")
        else:
            _render(report, "audit")
    sys.exit(0 if report.clean else 1)
