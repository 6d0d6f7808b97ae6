"""The report as markdown, as an HTML page, and as a few terminal lines. Both documents render the one list
of sections in eval.report.sections; here is only how each kind of block looks."""

from __future__ import annotations

import html

from eval.report.blocks import Block, Image, Inline, Items, Paragraph, Table
from eval.report.budget import BUDGET_HEAD, BUDGETS
from eval.report.sections import TITLE, intro, sections
from eval.report.text import NOT_MEASURED, fmt_bleu, fmt_opt, human

# ----------------------------------------------------------------------------- markdown

MD_SPAN = {"": "{}", "term": '"{}"', "bold": "**{}**", "code": "`{}`"}


def _md_inline(spans: Inline) -> str:
    return "".join(MD_SPAN[s.style].format(s.text) for s in spans if s.style != "aside")


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in table.head) + " |", "|" + "---|" * len(table.head)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.body]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return _md_inline(block.spans)
    if isinstance(block, Items):
        marks = [f"{i}." for i in range(1, len(block.items) + 1)] if block.ordered else ["-"] * len(block.items)
        return "\n".join(f"{mark} {_md_inline(item)}" for mark, item in zip(marks, block.items))
    if isinstance(block, Table):
        return _md_table(block)
    return f"![{block.label}]({block.src})"


def render_markdown(report: dict) -> str:
    """report.md: a heading per section, a blank line after every heading and block."""
    out = [f"# {TITLE}", "", _md_block(intro(report)), ""]
    for section in sections(report):
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            out += [_md_block(block), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; max-width: 100em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.PASS { background: #dff3e0; color: #14561f; } .FAIL { background: #fbe0e0; color: #8a1414; font-weight: bold; }
.unknown, .nm { color: #777; font-style: italic; } .sig { font-family: monospace; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""
HTML_SPAN = {
    "": "{}",
    "term": '<span class="nm">{}</span>',
    "bold": "<b>{}</b>",
    "code": "<code>{}</code>",
    "aside": "{}",
}


def _html_inline(spans: Inline) -> str:
    return "".join(HTML_SPAN[s.style].format(html.escape(s.text)) for s in spans)


def _html_cell(text: str, cls: str = "") -> str:
    """A table cell; "not measured" and "unknown ..." are greyed out whatever the cell's class."""
    if text == NOT_MEASURED or text.startswith("unknown"):
        cls = (cls + " nm").strip()
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def _html_table(table: Table) -> str:
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.head) + "</tr>"]
    for i, row in enumerate(table.body):
        cls = table.classes[i] if table.classes else [""] * len(row)
        rows.append("<tr>" + "".join(_html_cell(c, k) for c, k in zip(row, cls)) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return (
            f'<p class="nm">{_html_inline(block.spans)}</p>' if block.muted else f"<p>{_html_inline(block.spans)}</p>"
        )
    if isinstance(block, Items):
        items = [f"<li>{_html_inline(item)}</li>" for item in block.items]
        return "<ol>" + "".join(items) + "</ol>" if block.ordered else "<ul>\n" + "\n".join(items) + "\n</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    assert isinstance(block, Image)
    return f'<img src="{html.escape(block.src)}" alt="{html.escape(block.alt)}">'


def render_html(report: dict) -> str:
    """report.html: one self-contained page (inline CSS; the plots beside it as PNG files)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(TITLE)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
        _html_block(intro(report)),
    ]
    for section in sections(report):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            rendered = _html_block(block)
            if isinstance(block, Items) and not block.ordered:
                parts[-1] += rendered  # a bullet list opens on the line before it (its heading's)
            else:
                parts.append(rendered)
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- terminal


def summarize(report: dict) -> str:
    """A few lines for the terminal: one per row with its verdict."""
    lines = []
    for r in report["rows"]:
        fails = [BUDGET_HEAD[k] for k in BUDGETS if r["budget"][k]["status"] == "FAIL"]
        lines.append(
            f"{r['id']}: {human(r['macs']) if r['macs'] is not None else NOT_MEASURED} MACs, "
            f"BLEU {fmt_bleu(r['bleu'])}, size {fmt_opt(r['size_mb'], lambda v: f'{v:.2f} MB')}: "
            f"{r['verdict']}" + (f" ({', '.join(fails)})" if fails else "")
        )
    return "\n".join(lines)
