"""What a monitor does about an alert: call a webhook, roll back, route all traffic to a variant, undeploy.

Each action runs on its own (a failing webhook never blocks a rollback), respects its cooldown, and is recorded
with its outcome in `action_runs`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Protocol

import httpx

from finalmile.errors import ActionFailed, PipelineNotDeployed
from finalmile.monitoring.config import Action, RollbackAction, RouteAction, UndeployAction, WebhookAction
from finalmile.monitoring.store import AlertRecord, MonitorStore, SavedMonitor
from finalmile.pipelines.spec import PipelineSpec, SplitStepSpec, walk
from finalmile.pipelines.store import DeploymentRecord, PipelineStore, PipelineVersionRecord
from finalmile.registry.store import utc_now

log = logging.getLogger(__name__)


class Deployer(Protocol):
    """What actions change: the composition root implements it (monitors never hold a `Client`)."""

    pipelines: PipelineStore

    def deploy(
        self, name: str, version: int | None = None, config: Any = None, actor: str | None = None, action: str = ""
    ) -> PipelineVersionRecord:
        """Deploy `version`; `config=None` keeps the settings of the deployment serving now."""

    def undeploy(self, name: str, actor: str | None = None) -> None: ...

    def create_pipeline_version(self, spec: dict[str, Any], actor: str | None = None) -> PipelineVersionRecord: ...


def take_actions(deployer: Deployer, store: MonitorStore, monitor: SavedMonitor, alerts: list[AlertRecord]) -> None:
    """Run the monitor's actions for the worst of `alerts` at the monitor's action level (once per run)."""
    level = monitor.config.action_level
    firing = [a for a in alerts if a.level == "alert" or (level == "warning" and a.level == "warning")]
    if not firing:
        return
    alert = firing[-1]
    due = []
    for action in monitor.config.actions:
        last = store.last_action(monitor, action.kind)
        if last is not None and utc_now() - last < timedelta(seconds=action.cooldown_s):
            store.record_action(monitor, alert, action.kind, "cooldown", f"ran at {last.isoformat()}")
        else:
            due.append(action)
    if due:  # each in its own thread: a webhook retrying with back-off never delays a rollback
        with ThreadPoolExecutor(len(due), thread_name_prefix="finalmile-action") as pool:
            for action in due:
                pool.submit(_take, deployer, store, monitor, alert, action)


def _take(deployer: Deployer, store: MonitorStore, monitor: SavedMonitor, alert: AlertRecord, action: Action) -> None:
    try:
        detail = _run(deployer, monitor, alert, action)
        store.record_action(monitor, alert, action.kind, "done", detail)
    except Exception as exc:  # one failing action must not stop the others
        log.warning("monitor %s: action %s failed: %s", monitor.config.name, action.kind, exc)
        store.record_action(monitor, alert, action.kind, "failed", str(exc))


def _run(deployer: Deployer, monitor: SavedMonitor, alert: AlertRecord, action: Action) -> str:
    pipeline = monitor.config.pipeline
    if isinstance(action, WebhookAction):
        return post_webhook(action, alert.payload())
    if isinstance(action, UndeployAction):
        deployer.undeploy(pipeline, actor=_actor(monitor))
        return f"undeployed {pipeline}"
    if isinstance(action, RollbackAction):
        return rollback(deployer, pipeline, _actor(monitor))
    assert isinstance(action, RouteAction)
    return route_all(deployer, pipeline, action.variant, _actor(monitor))


def rollback(deployer: Deployer, pipeline: str, actor: str) -> str:
    """Deploy the version before the one serving (a monitor's action, and the dashboard's button)."""
    current = _deployed(deployer.pipelines, pipeline)
    earlier = [v.version for v in deployer.pipelines.list_versions(pipeline) if v.version < current.version]
    if not earlier:
        raise ActionFailed(f"{pipeline} version {current.version} has no earlier version to roll back to")
    deployer.deploy(pipeline, max(earlier), actor=actor, action="rollback")
    return f"rolled {pipeline} back from version {current.version} to {max(earlier)}"


def route_all(deployer: Deployer, pipeline: str, variant: str, actor: str) -> str:
    """Deploy a new version of the serving one that sends all of its A/B split's traffic to `variant`."""
    current = _deployed(deployer.pipelines, pipeline)
    spec = PipelineSpec.model_validate(deployer.pipelines.get_version(pipeline, current.version).spec)
    splits = [s for s in walk(list(spec.steps)) if isinstance(s, SplitStepSpec)]
    if not any(v.name == variant for s in splits for v in s.variants):
        raise ActionFailed(
            f"variant: {pipeline} version {current.version} has no A/B variant {variant!r}", {"field": "variant"}
        )
    for split in splits:
        if any(v.name == variant for v in split.variants):
            for each in split.variants:
                each.weight = 1.0 if each.name == variant else 0.0
    record = deployer.create_pipeline_version(spec.model_dump(mode="json"), actor=actor)
    deployer.deploy(pipeline, record.version, actor=actor, action="route")
    return f"sent all traffic of {pipeline} to variant '{variant}' (version {record.version})"


def _actor(monitor: SavedMonitor) -> str:
    return f"monitor {monitor.config.name}"


def _deployed(pipelines: PipelineStore, pipeline: str) -> DeploymentRecord:
    for deployment in pipelines.deployments():
        if deployment.name == pipeline:
            return deployment
    raise PipelineNotDeployed(pipeline)


def post_webhook(action: WebhookAction, payload: dict[str, object]) -> str:
    """POST the alert as JSON; retried with exponential back-off (0.5 s, 1 s, 2 s, …) on errors and 5xx."""
    error = ""
    for attempt in range(action.retries + 1):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            response = httpx.post(action.url, json=payload, headers=action.headers, timeout=10)
            if response.status_code < 500:
                response.raise_for_status()
                return f"POST {action.url}: {response.status_code} after {attempt + 1} attempt(s)"
            error = f"HTTP {response.status_code}"
        except httpx.HTTPStatusError as exc:  # 4xx: the receiver refuses it; retrying will not help
            raise ActionFailed(f"webhook {action.url} refused the alert: HTTP {exc.response.status_code}") from None
        except httpx.HTTPError as exc:
            error = str(exc) or type(exc).__name__
    raise ActionFailed(f"webhook {action.url} failed after {action.retries + 1} attempts: {error}")
