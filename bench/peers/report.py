"""The peers bench's results table: one :class:`Figure` per row, printed as markdown for the
README, with ratios against direct and against LiteLLM and issue 9's target for podgate."""

from __future__ import annotations

import math
from dataclasses import dataclass

WAYS = ("direct", "podgate", "LiteLLM")


@dataclass
class Figure:
    """One row. ``values``: the median per way (None: not measured). ``added``: latency rows,
    where podgate and LiteLLM are shown as the time added over direct. ``target``: podgate's
    bound (``"<="`` or ``">="``, value) in the row's unit."""

    label: str
    values: dict[str, float | None]
    higher_is_better: bool
    digits: int = 1
    added: bool = False
    target: tuple[str, float] | None = None
    target_text: str = ""

    def shown(self, way: str) -> float | None:
        value = self.values.get(way)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.added and way != "direct":
            base = self.values.get("direct")
            return None if base is None else value - base
        return value

    def cell(self, way: str) -> str:
        value = self.shown(way)
        if value is None:
            return "—"
        if self.added and way != "direct":
            return f"+{value:,.{self.digits}f}" if value >= 0 else f"{value:,.{self.digits}f}"
        return f"{value:,.{self.digits}f}"

    def vs_direct(self) -> str:
        """podgate's value over direct's (for latency rows: total over total)."""
        pod, base = self.values.get("podgate"), self.values.get("direct")
        if not pod or not base:
            return "—"
        return f"{pod / base:,.2f}×"

    def vs_litellm(self) -> str:
        """How many times better podgate is than LiteLLM (for latency rows: on the time added)."""
        pod, peer = self.shown("podgate"), self.shown("LiteLLM")
        if pod is None or peer is None or pod <= 0 or peer <= 0:
            return "—"
        better = pod / peer if self.higher_is_better else peer / pod
        return f"{better:,.1f}× better" if better >= 1 else f"{1 / better:,.1f}× worse"

    def verdict(self) -> str:
        if self.target is None:
            return ""
        op, bound = self.target
        value = self.shown("podgate")
        if value is None:
            return f"{self.target_text} (not measured)"
        met = value <= bound if op == "<=" else value >= bound
        if met:
            return f"{self.target_text} ✅"
        by = value - bound if op == "<=" else bound - value
        return f"{self.target_text} ❌ (missed by {by:,.{self.digits}f})"


def table(figures: list[Figure]) -> str:
    lines = ["| figure (median of rounds) | direct | podgate | LiteLLM | podgate ÷ direct | podgate vs LiteLLM "
             "| podgate target |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for f in figures:
        cells = [f.label, *(f.cell(w) for w in WAYS), f.vs_direct(), f.vs_litellm(), f.verdict()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options_table(figures: list[Figure], names: list[str]) -> str:
    """The podgate variants side by side: one row per variant, one column per figure."""
    head = ["podgate variant", *(f.label for f in figures)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * len(figures)]
    for name in names:
        lines.append("| " + " | ".join([name, *(f.cell(name) for f in figures)]) + " |")
    return "\n".join(lines)
