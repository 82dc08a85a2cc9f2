"""Rendering: numbers as the report prints them, and one document written as Markdown and as HTML."""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

from ray_t2t.reporting.stats import Crossings, Stat


def fmt(value: Any) -> str:
    """A number as the report prints it: 4 significant digits, thousands separators from 10,000."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def cell(stat: Stat) -> str:
    """mean ± confidence half-width; the mean alone for one run (or when every run agrees)."""
    if stat.mean is None:
        return "—"
    if stat.half is None or stat.half == 0:
        return fmt(stat.mean)
    half = f"{stat.half:,.0f}" if stat.half >= 100 else f"{stat.half:.2g}"
    return f"{fmt(stat.mean)} ± {half}"


def _atomic_write(path: Path, data: bytes | str) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    if isinstance(data, str):
        staging.write_text(data)
    else:
        staging.write_bytes(data)
    staging.replace(path)


class Document:
    """Blocks rendered as Markdown and as HTML from one source."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("image", path, alt))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "paragraph":
                out.append(block[1])
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                headers, rows = block[1], block[2]
                escape = lambda text: str(text).replace("|", "\\|")
                lines = ["| " + " | ".join(map(escape, headers)) + " |", "|" + " --- |" * len(headers)]
                lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "image":
                out.append(f"![{block[2]}]({block[1].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
            "<style>body{font-family:sans-serif;max-width:90rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;"
            "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
            "img{max-width:100%}code{background:#f4f4f4}</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block[2]
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(block[1].read_bytes()).decode()
                out.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
        out.append("</body></html>\n")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown `code` and **bold** as HTML, the rest escaped."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def crossing_cell(crossings: Crossings, level: float) -> str:
    """Time (or money) to target over a group's runs: mean ± half-width when every run reached it;
    where a majority did, the median with its order-statistic interval (and its coverage when the
    runs are too few for `level`); else how far the runs that never reached it got."""
    if crossings.runs == 0:
        return "—"
    if crossings.all_reached:
        return cell(crossings.stat)
    if crossings.majority:
        low, high, coverage = crossings.median_interval()
        beyond = crossings.censored_beyond()
        upper = fmt(high) if high is not None else f"> {fmt(beyond)}"
        shown = f" ({coverage:.0%})" if coverage + 1e-9 < level else ""
        return f"median {fmt(crossings.median)} [{fmt(low)}, {upper}]{shown}"
    beyond = crossings.censored_beyond()
    return "—" if beyond is None or math.isinf(beyond) else f"> {fmt(beyond)}"
