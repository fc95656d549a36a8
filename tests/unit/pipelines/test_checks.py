"""Check expressions are refused with a message, whatever their shape: never Python's RecursionError as a 500."""

from __future__ import annotations

import pytest

from finalmile.errors import InvalidCheckError
from finalmile.pipelines.checks import MAX_CHECK_CHARS, compile_check


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("in.x" * 5_000, f"at most {MAX_CHECK_CHARS:,}"),  # 5,000 attributes deep: Python's parser gave up
        ("-" * 1_900 + "1 > 0", "nested too deeply"),  # 1,900 deep, within the length: our compiler's recursion
    ],
)
def test_an_expression_too_deep_or_too_long_is_refused_naming_the_problem(expression: str, message: str) -> None:
    with pytest.raises(InvalidCheckError, match=message):
        compile_check(expression)


def test_a_long_but_reasonable_rule_still_compiles() -> None:
    _, inputs, outputs = compile_check(" or ".join(f"in.f{i} > {i}" for i in range(100)))
    assert len(inputs) == 100 and not outputs
