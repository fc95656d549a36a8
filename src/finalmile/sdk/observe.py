"""Monitors, alerts and the audit trail as the embedded client speaks them (the remote client speaks the same
verbs over `/api/v1/assays`, `/api/v1/alerts` and `/api/v1/audit`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from finalmile.monitoring.build import build_config, save_definition
from finalmile.monitoring.runs import preview, results_frame
from finalmile.monitoring.store import AlertRecord
from finalmile.sdk.monitors import Monitor
from finalmile.sdk.refs import model_ref, pipeline_name

if TYPE_CHECKING:
    import pandas as pd

    from finalmile.services import Services


class MonitorVerbs:
    """Mixed into the embedded client."""

    services: Services

    def build_monitor(
        self,
        name: str,
        pipeline: Any,
        kind: str,
        metric: str | None = None,
        column: str | None = None,
        window: Any = "1d",
        interval: Any = None,
        warning: float | None = None,
        alert: float | None = None,
        label: str | None = None,
        variant: str | None = None,
        group_by: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> Monitor:
        """A monitor of `kind` `check_rate` (column = the check's name), `performance` (metric: accuracy, precision,
        recall, f1, roc_auc, log_loss, rmse, mae, r2; `label` = the ground-truth column), `error_rate` or
        `latency_p99` (milliseconds), `data_quality` (`check=` null_rate, out_of_range, unseen_category or
        type_change of `column`; all but null_rate against a `baseline`), `estimated_performance` (a classifier's
        accuracy, precision, recall, f1 or roc_auc from its scores, or a regressor's mae or rmse from its inputs
        `columns=[…]`, learnt on a labelled `reference`), `multivariate_drift` (`columns=[…]`, `method=` pca or
        classifier), and for generative pipelines `ttft_p99` (milliseconds) and `tokens_per_s` (the median; lower is
        worse); thresholds, windows and actions as for `build_assay`. Checked now, stored by `.save()`."""
        if hasattr(options.get("baseline"), "ref"):
            options["baseline"] = model_ref(options["baseline"])  # a model version: its stored sample
        config, baseline = build_config(
            self.services.monitoring,
            name=name,
            pipeline=pipeline_name(pipeline),
            kind=kind,
            metric=metric,
            column=column,
            window=window,
            interval=interval,
            warning=warning,
            alert=alert,
            label=label,
            variant=variant,
            group_by=group_by,
            actions=actions,
            **options,
        )
        return Monitor(self.services.monitoring, config, baseline=baseline)

    def save_monitor(self, definition: dict[str, Any], start: datetime | None = None) -> Monitor:
        """Store a monitor from its definition (the fields of `build_monitor`, as `finalmile assays apply` reads
        them from YAML); its first window ends one interval after `start` (default: now)."""
        saved = save_definition(self.services.monitoring, definition, start)
        return Monitor(self.services.monitoring, saved.config, saved)

    def monitor(self, name: str) -> Monitor:
        saved = self.services.monitors.get(name)
        return Monitor(self.services.monitoring, saved.config, saved)

    def monitors(self, pipeline: Any = None) -> list[Monitor]:
        chosen = pipeline_name(pipeline) if pipeline is not None else None
        return [Monitor(self.services.monitoring, s.config, s) for s in self.services.monitors.all(chosen)]

    def monitor_results(self, name: str) -> pd.DataFrame:
        """A saved monitor's stored results, oldest first: window, rows, score, status, evidence."""
        return results_frame(self.services.monitors.results(name))

    def preview_monitor(self, name: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """A saved monitor computed over history at once, nothing stored (to tune thresholds)."""
        return results_frame(preview(self.services.monitoring, self.services.monitors.get(name).config, start, end))

    def delete_monitor(self, name: str) -> None:
        self.services.monitors.delete(name)

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved, enabled monitor's windows that have ended (what `finalmile serve` does every few
        seconds); returns how many results were stored."""
        return self.services.run_monitors(now)

    def alerts(self, monitor: str | None = None) -> pd.DataFrame:
        """Alerts raised so far (every monitor, or one), oldest first, each with what its actions did."""
        import pandas as pd

        return pd.DataFrame(self.services.monitors.alerts_with_actions(monitor))

    def acknowledge_alert(self, alert_id: int) -> AlertRecord:
        """Say a person has seen the alert (the first acknowledgement stands)."""
        return self.services.acknowledge_alert(alert_id)

    def audit(self, target: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Every state change (upload, alias, version, deploy, undeploy, rollback or route by a monitor), oldest
        first: at, actor, action, target, before, after; `target` keeps targets starting with it (`"pipeline
        fraud"`), `limit` the most recent that many."""
        import pandas as pd

        return pd.DataFrame([vars(e) for e in self.services.audit.entries(target, limit)])
