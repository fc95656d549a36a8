"""Explanations as the embedded client speaks them (the remote client speaks the same verbs over
`/api/v1/models/{ref}/explain` and `/api/v1/pipelines/{name}/explanations`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from finalmile.sdk.refs import model_ref, pipeline_name

if TYPE_CHECKING:
    import pandas as pd

    from finalmile.services import Services


class ExplanationVerbs:
    """Mixed into the embedded client."""

    services: Services

    def explain_model(self, ref: Any, rows: Any, background: Any = None) -> pd.DataFrame:
        """Each feature's contribution to each row's output (one column per feature, `base_value`, and `value`,
        their sum: the output explained), by model version `ref`: exact tree SHAP for tree models, permutation
        SHAP within a stated budget for the others; `background`: rows standing for "typical" (default: the
        version's upload sample)."""
        return self.services.explain_model(model_ref(ref), rows, background).to_pandas()

    def explain(self, pipeline: Any, request_id: str) -> pd.DataFrame:
        """Why a logged request was scored as it was: its rows explained with the model version that scored them."""
        return self.services.explain(pipeline_name(pipeline), request_id).to_pandas()

    def importance(self, pipeline: Any, start: datetime | None = None, end: datetime | None = None,
                   window: Any = "1h", rows: int = 200) -> pd.DataFrame:  # fmt: skip
        """Per window from `start` (default a day ago) to `end` (now), each feature's mean absolute contribution
        over a sample of `rows` logged rows: which features drive the decisions, and whether that changes."""
        return self.services.importance(pipeline_name(pipeline), start, end, window, rows).to_pandas()
