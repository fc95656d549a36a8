"""Why a row was scored as it was: each feature's contribution to the explained output, and the base value they add
to (`sum(contributions) + base_value == value`, SHAP's additivity).

Exact where the model allows it — the frameworks' own tree contributions (XGBoost `pred_contribs`, LightGBM
`pred_contrib`, both on the margin) and `shap`'s tree explainer for scikit-learn trees (on the probability), run
where the model runs (a pickle in its sandbox) — else model-agnostic: permutation SHAP over the model's predict with
a stated budget (`PERMUTATION_EVALS` model calls a row, a background of at most `BACKGROUND_ROWS` rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError
from finalmile.runtimes.base import CLASSIFICATION, REGRESSION

MAX_ROWS = 1_000
"""Rows explained in one call: explanations are computed on demand, for people, never on the request path."""
PERMUTATION_EVALS = 200
"""Model calls a row the model-agnostic method may make (at least 2 × features + 1 are needed)."""
BACKGROUND_ROWS = 100
EXPLAINED = b"finalmile.explains"
"""Schema metadata: which output the contributions add up to (`score`, `margin` or `prediction`)."""


def contribution_table(names: list[str], contributions: np.ndarray, base: np.ndarray, explains: str) -> pa.Table:
    """One column per feature, then `base_value` and `value` (their sum), as every explainer answers."""
    columns = {name: pa.array(contributions[:, i].astype(np.float64)) for i, name in enumerate(names)}
    base = np.broadcast_to(np.asarray(base, dtype=np.float64), (len(contributions),))
    columns["base_value"] = pa.array(base)
    columns["value"] = pa.array(contributions.sum(axis=1) + base)
    table = pa.table(columns)
    return table.replace_schema_metadata({EXPLAINED: explains.encode()})


def explain(runtime: Any, table: pa.Table, background: pa.Table | None) -> pa.Table:
    """The rows of `table` explained: exactly where the runtime can (`contributions`), else by permutation."""
    if table.num_rows > MAX_ROWS:
        raise InvalidInputError(f"rows: explain at most {MAX_ROWS:,} rows at once, got {table.num_rows:,}",
                                {"field": "rows"})  # fmt: skip
    if table.num_rows == 0:
        raise InvalidInputError("rows: nothing to explain", {"field": "rows"})
    exact = getattr(runtime, "contributions", None)
    if exact is not None:
        try:
            return exact(table)
        except NotImplementedError:
            pass
    return permutation(runtime, table, background)


def explained_output(runtime: Any) -> str:
    """What a model-agnostic explanation explains: a binary classifier's score, a regressor's prediction."""
    context = runtime.context if hasattr(runtime, "context") else None
    task = getattr(context, "task", None)
    classes = getattr(context, "classes", None)
    if task == CLASSIFICATION and classes is not None and len(classes) == 2:
        return "score"
    if task == REGRESSION:
        return "prediction"
    raise InvalidInputError(
        "model: only binary classifiers and regressors are explained (one number a row to attribute)",
        {"field": "model"},
    )


def permutation(runtime: Any, table: pa.Table, background: pa.Table | None) -> pa.Table:
    """Permutation SHAP: each feature's average effect on the output as features are switched, in random orders,
    from background values to the row's own (within `PERMUTATION_EVALS` model calls a row)."""
    shap = _shap()
    output = explained_output(runtime)
    names = runtime.schema.input_names()
    rows = _matrix(table, names)
    base = rows if background is None else _matrix(background, names)
    base = base[np.random.default_rng(0).choice(len(base), min(len(base), BACKGROUND_ROWS), replace=False)]

    def predict(X: np.ndarray) -> np.ndarray:
        frame = pa.table({n: pa.array(X[:, i]) for i, n in enumerate(names)})
        return runtime.predict(frame).column(output).to_numpy(zero_copy_only=False).astype(np.float64)

    evals = max(PERMUTATION_EVALS, 2 * len(names) + 1)
    explainer = shap.PermutationExplainer(predict, shap.maskers.Independent(base, max_samples=BACKGROUND_ROWS), seed=0)
    found = explainer(rows, max_evals=evals, silent=True)
    return contribution_table(names, np.asarray(found.values), np.asarray(found.base_values), output)


def tree_contributions(model: Any, X: Any, names: list[str], classifier: bool) -> pa.Table:
    """`shap`'s exact tree SHAP of a scikit-learn tree model, on its probability of the positive class (or its
    prediction); NotImplementedError for other models, so the caller falls back to permutation."""
    shap = _shap()
    if not (hasattr(model, "estimators_") or hasattr(model, "tree_")):
        raise NotImplementedError("not a tree model")
    try:
        explainer = shap.TreeExplainer(model)
    except Exception as exc:  # shap's own refusal (a tree model it does not support)
        raise NotImplementedError(str(exc)) from None
    values = np.asarray(explainer.shap_values(X, check_additivity=False))
    base = np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)
    if classifier:
        if values.ndim != 3 or values.shape[2] != 2:
            raise NotImplementedError("only binary classifiers")
        return contribution_table(names, values[:, :, 1], base[1], "score")
    return contribution_table(names, values, base[0], "prediction")


def _shap() -> Any:
    """`shap`, imported here rather than at import (only explanations need it: `pip install 'finalmile[explain]'`),
    quietly: it builds its plots' colour maps at import with matplotlib calls that warn of their deprecation."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    return shap


def _matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise InvalidInputError(f"rows: missing column(s) {', '.join(missing)}", {"field": "rows"})
    try:
        return np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]).astype(np.float64)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise InvalidInputError(f"rows: the model's inputs must be numbers ({exc})", {"field": "rows"}) from None
