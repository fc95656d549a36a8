"""Building a monitor: its configuration checked now — thresholds, windows, the column, the baseline — not when
it runs. Every front end (SDK, CLI, REST) builds through `build_config`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pyarrow import ArrowException
from pydantic import ValidationError

from finalmile.config import parse_duration
from finalmile.errors import InvalidInputError
from finalmile.monitoring.baseline import baseline_spec, baseline_values, is_frame, store_frame
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import kind_of, problems
from finalmile.monitoring.kinds.base import ColumnKind
from finalmile.monitoring.reference import prepare_reference
from finalmile.monitoring.runs import save
from finalmile.monitoring.store import SavedMonitor
from finalmile.pipelines.spec import CheckStepSpec, GuardrailStepSpec, ModelStepSpec, PipelineSpec, ShadowStepSpec, walk
from finalmile.schema import Schema

FIXED_COLUMNS = {"time", "request_id", "row", "pipeline", "pipeline_version", "variant", "model_versions", "latency_ms"}
"""Columns every log row has, whatever the pipeline."""


def build_config(ctx: MonitorContext, **fields: Any) -> tuple[MonitorConfig, np.ndarray | None]:
    """A checked configuration, and the baseline values of a drift assay (its frame stored as an artifact)."""
    baseline = fields.pop("baseline", None)
    if fields.get("reference") is not None:  # what kinds that learn from a labelled reference call their baseline
        baseline = fields.pop("reference")
    fields.pop("reference", None)
    fields = {k: v for k, v in fields.items() if v is not None}
    # The defaults every front end shares: a window ends every window unless told otherwise, and a monitor other
    # than a drift assay is named by its kind (`error_rate`, `latency_p99`, …).
    fields.setdefault("kind", "drift")
    if "method" in fields:  # a multivariate drift monitor's method is its metric
        if fields.get("kind") != "multivariate_drift":
            raise InvalidInputError("method: only a multivariate_drift monitor takes a method", {"field": "method"})
        fields["metric"] = fields.pop("method")
    if "check" in fields:  # a data-quality monitor's check is its metric
        if fields["kind"] != "data_quality":
            raise InvalidInputError("check: only a data_quality monitor takes a check", {"field": "check"})
        fields["metric"] = fields.pop("check")
    fields.setdefault("metric", {"drift": "psi", "multivariate_drift": "pca"}.get(fields["kind"], fields["kind"]))
    if "window" in fields:
        fields.setdefault("interval", fields["window"])
    for key in ("window", "interval"):
        if key in fields:
            fields[f"{key}_s"] = parse_duration(fields.pop(key), key)
    ctx.pipelines.get_version(fields["pipeline"])  # an unknown pipeline is a 404 now
    if baseline is not None:  # checked after the column: a frame is stored only for a monitor that can exist
        fields["baseline"] = {"kind": "frame"} if is_frame(baseline) else baseline_spec(ctx, baseline)
    try:
        config = MonitorConfig.model_validate(fields)
    except ValidationError as exc:
        found = [  # checks across fields name their fields in the message; single fields get their name here
            (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise InvalidInputError("; ".join(found), found) from None
    found = problems(config)
    if found:
        raise InvalidInputError("; ".join(found), found)
    _check_column(ctx, config)
    if not kind_of(config).needs_baseline(config):
        return config, None
    if kind_of(config).reference is not None:
        return config, prepare_reference(ctx, config, baseline if is_frame(baseline) else None)
    if is_frame(baseline):
        assert config.baseline is not None and config.column is not None
        config.baseline.artifact, values = store_frame(ctx.artifacts, baseline, config.column)
    else:
        values = baseline_values(ctx, config)  # no rows: an error now
    if values.dtype == object and config.kind == "drift" and config.metric != "chi_squared":
        raise InvalidInputError(f"metric: '{config.column}' holds categories, not numbers; use metric='chi_squared'")
    return config, values


def save_definition(ctx: MonitorContext, fields: dict[str, Any], start: datetime | None = None) -> SavedMonitor:
    """Build and store a monitor from its definition as the API and the CLI's YAML carry it (`baseline_values`:
    the baseline column's values, for training data sent as JSON)."""
    fields = dict(fields)
    values = fields.pop("baseline_values", None)
    rows = fields.pop("baseline_rows", None)
    try:
        if values is not None:
            fields["baseline"] = np.asarray(values)
        if rows is not None:  # a frame of several columns, sent as records
            import pandas as pd

            fields["baseline"] = pd.DataFrame.from_records(rows)
        config, values = build_config(ctx, **fields)
    except (ValueError, TypeError, OverflowError, ArrowException) as exc:  # values no monitor can be built from
        raise InvalidInputError(f"invalid monitor: {exc}") from None
    return save(ctx, config, start, values)


def _check_column(ctx: MonitorContext, config: MonitorConfig) -> None:
    """Each column the monitor reads must be logged (or produced by the pipeline); `amount` stands for `in_amount`
    where only one of `in_amount` and `out_amount` exists, and is stored as that."""
    kind = kind_of(config)
    wanted = kind.logged_column(config)
    if not config.columns and wanted is None:
        return
    logged = logged_columns(ctx, config.pipeline)
    if config.columns:
        config.columns = [_logged(config, "columns", c, c, logged, True) for c in config.columns]
    if wanted is None:
        return
    found = _logged(config, kind.column_noun, wanted, config.column or wanted, logged, isinstance(kind, ColumnKind))
    if isinstance(kind, ColumnKind):
        config.column = found


def _logged(config: MonitorConfig, noun: str, wanted: str, shown: str, logged: set[str], short: bool) -> str:
    if wanted not in logged and short:
        found = [c for c in (f"in_{wanted}", f"out_{wanted}") if c in logged]
        if len(found) > 1:
            raise InvalidInputError(
                f"column: '{wanted}' is both an input and an output of pipeline '{config.pipeline}'; "
                f"name {' or '.join(found)}",
                {"field": "column"},
            )
        if found:
            return found[0]
    if wanted not in logged:
        options = sorted(c for c in logged if c not in FIXED_COLUMNS)
        raise InvalidInputError(
            f"column: pipeline '{config.pipeline}' does not log {noun} '{shown}'; it logs {', '.join(options)}",
            {"field": "columns" if config.columns else "column"},
        )
    return wanted


def logged_columns(ctx: MonitorContext, pipeline: str) -> set[str]:
    """The columns a pipeline's log has, or will have: its log so far, and what its latest version produces."""
    columns = set(FIXED_COLUMNS) | {"status"}
    spec = PipelineSpec.model_validate(ctx.pipelines.get_version(pipeline).spec)

    def schema(ref: str) -> Schema:
        return Schema.model_validate(ctx.models.get_by_ref(ref).schema)

    for step in walk(list(spec.steps)):
        if isinstance(step, ModelStepSpec):
            columns |= {f"in_{c.name}" for c in schema(step.model).inputs or []}
            columns |= {f"out_{c.name}" for c in schema(step.model).outputs}
        elif isinstance(step, (CheckStepSpec, GuardrailStepSpec)):
            columns.add(f"check_{step.name}")
        elif isinstance(step, ShadowStepSpec):
            for challenger, steps in step.challengers.items():
                for s in walk(list(steps)):
                    if isinstance(s, ModelStepSpec):
                        columns |= {f"shadow_{challenger}_{c.name}" for c in schema(s.model).outputs}
    return columns | ctx.reader.logged_columns(pipeline)
