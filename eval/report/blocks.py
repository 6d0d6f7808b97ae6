"""The content model between the report's sections and its renderers: a section is a title and blocks
(paragraphs, lists, tables, images); text inside paragraphs and list items is a list of styled spans.

The sections (eval.report.sections) say what the report shows; the renderers (eval.report.render) only
say how each kind of block looks in markdown and in HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# plain | a term standing for a state ("not measured", "unknown") | bold | code | text only the HTML page
# carries (the markdown stays terse)
Style = Literal["", "term", "bold", "code", "aside"]


@dataclass(frozen=True)
class Span:
    text: str
    style: Style = ""


Inline = list[Span]


@dataclass(frozen=True)
class Paragraph:
    spans: Inline
    muted: bool = False  # says that something is absent ("BLEU not measured.")


@dataclass(frozen=True)
class Items:
    items: list[Inline]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    head: list[str]
    body: list[list[str]]
    # per cell, the HTML class: "num" (right-aligned figure), "sig" (a signature), or a verdict/status
    # (PASS, FAIL, unknown, no budget) that colours the cell; None: no classes
    classes: list[list[str]] | None = None


@dataclass(frozen=True)
class Image:
    src: str
    label: str  # short: the markdown image text
    alt: str  # the HTML alt text, which says what the figure shows


Block = Paragraph | Items | Table | Image


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def text(s: str) -> Inline:
    """Plain text as one span."""
    return [Span(s)]
