"""Guardrails: text rules over a generated column that flag, redact or refuse a row before the answer leaves.

A rule is a regular expression (RE2, run by Arrow over the whole column at once), a list of blocked words, or one of
the built-in detectors of personal data. A guardrail is a check too: its flags go to the log as `check_<name>`, so a
check-rate monitor alerts on it like on any other check.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finalmile.errors import PredictionError
from finalmile.pipelines.batch import Batch

PII = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "phone": r"(?:\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b",
}
"""Personal data found by shape: an e-mail address, a payment card number (13-19 digits, spaced or not), a phone
number (NANP-like, with an optional country code). Cards come before phones, so a card is never half-redacted."""
REDACTED = "[redacted]"
REFUSED = "content_filter"
"""The finish reason of a refused row: the value OpenAI's API gives a filtered answer."""


def rules(patterns: list[str], blocked_words: list[str], pii: list[str]) -> list[str]:
    """The RE2 patterns a guardrail runs, checked now: a pattern Arrow cannot compile is a `ValueError` naming it."""
    found = [PII[p] for p in ("card", "email", "phone") if p in pii]
    if blocked_words:
        found.append(r"(?i)\b(?:" + "|".join(re.escape(w) for w in blocked_words) + r")\b")
    for pattern in patterns:
        try:
            pc.match_substring_regex(pa.array([""]), pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"pattern {pattern!r} is not a regular expression RE2 accepts: {exc}") from None
        found.append(pattern)
    if not found:
        raise ValueError("a guardrail needs patterns, blocked_words or pii")
    return found


class GuardrailStep:
    """Flags rows whose `column` matches any rule; `redact` replaces each match, `refuse` the whole text (and sets
    `finish_reason` to `content_filter` where the table has one)."""

    def __init__(self, name: str, column: str, patterns: list[str], action: str, refusal: str) -> None:
        self.name, self.column, self.patterns, self.action, self.refusal = name, column, patterns, action, refusal

    def run(self, batch: Batch) -> Batch:
        table = batch.table
        if self.column not in table.column_names:
            raise PredictionError(
                f"guardrail '{self.name}': no column '{self.column}' to check (the step before it answers "
                f"{', '.join(table.column_names)})"
            )
        text = table.column(self.column)
        hit = pa.chunked_array([pa.array(np.zeros(table.num_rows, dtype=bool))])
        for pattern in self.patterns:
            hit = pc.or_(hit, pc.fill_null(pc.match_substring_regex(text, pattern), False))
        flags = hit.to_numpy(zero_copy_only=False).astype(bool)
        checks = dict(batch.checks)
        checks[self.name] = flags if self.name not in checks else checks[self.name] | flags
        if self.action == "redact" and flags.any():
            for pattern in self.patterns:
                text = pc.replace_substring_regex(text, pattern, REDACTED)
            table = table.set_column(table.schema.get_field_index(self.column), self.column, text)
        elif self.action == "refuse" and flags.any():
            mask = pa.array(flags)
            refused = pc.if_else(mask, pa.scalar(self.refusal, text.type), text)
            table = table.set_column(table.schema.get_field_index(self.column), self.column, refused)
            if "finish_reason" in table.column_names:
                reason = table.column("finish_reason")
                index = table.schema.get_field_index("finish_reason")
                table = table.set_column(index, "finish_reason", pc.if_else(mask, pa.scalar(REFUSED), reason))
        return replace(batch, table=table, checks=checks)
