"""The remote client's explanation verbs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finalmile.arrow.frames import to_arrow
from finalmile.arrow.text import plain
from finalmile.sdk.refs import model_ref, pipeline_name
from finalmile.sdk.wire import Carrier


def _records(frame: Any) -> list[dict[str, Any]]:
    table = to_arrow(frame)[0]
    odd = [f.name for f in table.schema if not plain(f.type)]
    return table.drop_columns(odd).to_pylist() if odd else table.to_pylist()


class RemoteExplanationVerbs(Carrier):
    """Mixed into `RemoteClient`."""

    def explain_model(self, ref: Any, rows: Any, background: Any = None) -> Any:
        import pandas as pd

        body = {"rows": _records(rows), "background": _records(background) if background is not None else None}
        return pd.DataFrame(self._json("explain_model", params_in_path={"ref": model_ref(ref)}, json=body))

    def explain(self, pipeline: Any, request_id: str) -> Any:
        import pandas as pd

        where = {"name": pipeline_name(pipeline), "request_id": request_id}
        return pd.DataFrame(self._json("explain", params_in_path=where))

    def importance(self, pipeline: Any, start: datetime | None = None, end: datetime | None = None,
                   window: Any = "1h", rows: int = 200) -> Any:  # fmt: skip
        import pandas as pd

        seconds = window.total_seconds() if hasattr(window, "total_seconds") else window
        params: dict[str, Any] = {"window": f"{seconds:g}s" if isinstance(seconds, (int, float)) else seconds}
        params |= {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None} | {"rows": rows}
        frame = pd.DataFrame(self._json("importance", params_in_path={"name": pipeline_name(pipeline)}, params=params))
        if "window_end" in frame:
            frame["window_end"] = pd.to_datetime(frame["window_end"], utc=True)
        return frame
