"""Every operation a user can ask of finalmile, declared once: its name, the permission it needs, its HTTP route
and its CLI command.

The table is the contract the front ends are held to. `Client` (embedded and remote) has one method per verb, with
the same parameters and results; the remote client finds each verb's route here; the API's routes declare the
permission written here; the CLI has the command named here, which takes `--url`/`--token` like every other.
`tests/unit/test_verbs.py` fails when any of them is missing, and `tests/integration/test_verbs_live.py` calls every
verb embedded and against a live server. A new verb is a line here first.

`http=None`: the verb is composed of others on the client (`apply_pipeline` is `create_pipeline_version` and
`deploy_pipeline`) or builds a handle whose methods are verbs (`build_pipeline`). `cli=None`: no command, because the
verb takes or returns Python objects (an in-memory model, a handle) or is a sub-step of another command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from finalmile.access.roles import Permission


@dataclass(frozen=True)
class Verb:
    """One operation: what it is called, who may do it, and where each front end carries it."""

    name: str
    permission: Permission
    http: str | None
    """`METHOD /path/{param}` of the route that carries it out on a server."""
    cli: str | None
    """The `finalmile` command that speaks it (`models alias`)."""

    @property
    def method(self) -> str:
        return self.http.split(" ", 1)[0] if self.http else ""

    @property
    def path(self) -> str:
        return self.http.split(" ", 1)[1] if self.http else ""

    def url(self, **params: Any) -> str:
        """The route's path with its parameters filled in (each quoted as one path segment)."""
        return self.path.format(**{k: quote(str(v), safe="@:") for k, v in params.items()})


def _verbs(*rows: tuple[str, Permission, str | None, str | None]) -> dict[str, Verb]:
    return {name: Verb(name, permission, http, cli) for name, permission, http, cli in rows}


VERBS: dict[str, Verb] = _verbs(
    # access: the caller's workspace
    ("whoami", "read", "GET /api/v1/whoami", "whoami"),
    ("create_token", "admin", "POST /api/v1/tokens", "tokens create"),
    ("tokens", "admin", "GET /api/v1/tokens", "tokens list"),
    ("revoke_token", "admin", "DELETE /api/v1/tokens/{token_id}", "tokens revoke"),
    ("members", "admin", "GET /api/v1/members", "users list"),
    ("set_member", "admin", "PUT /api/v1/members/{user}", "users add"),
    ("remove_member", "admin", "DELETE /api/v1/members/{user}", "users remove"),
    # models
    ("upload_model", "write", "POST /api/v1/models/{name}", "models upload"),
    ("models", "read", "GET /api/v1/models", "models list"),
    ("model", "read", "GET /api/v1/models/{ref}", "models show"),
    ("model_versions", "read", "GET /api/v1/models/{name}/versions", "models versions"),
    ("set_alias", "write", "PUT /api/v1/models/{name}/aliases/{alias}", "models alias"),
    ("delete_alias", "write", "DELETE /api/v1/models/{name}/aliases/{alias}", "models unalias"),
    ("delete_model_version", "write", "DELETE /api/v1/models/{name}/versions/{version}", "models delete"),
    # pipelines and deployments
    ("build_pipeline", "write", None, None),
    ("pipeline", "read", "GET /api/v1/pipelines/{name}", "pipelines show"),
    ("pipelines", "read", "GET /api/v1/pipelines", "pipelines list"),
    ("pipeline_versions", "read", "GET /api/v1/pipelines/{name}", "pipelines versions"),
    ("create_pipeline_version", "write", "POST /api/v1/pipelines", None),
    ("apply_pipeline", "write", None, "pipelines apply"),
    ("deploy_pipeline", "write", "POST /api/v1/pipelines/{name}/deploy", "deploy"),
    ("undeploy_pipeline", "write", "POST /api/v1/pipelines/{name}/undeploy", "undeploy"),
    ("rollback_pipeline", "write", "POST /api/v1/pipelines/{name}/rollback", "rollback"),
    ("route_pipeline", "write", "POST /api/v1/pipelines/{name}/route", "route"),
    ("deployments", "read", "GET /api/v1/deployments", "deployments"),
    ("bundle_pipeline", "write", "GET /api/v1/pipelines/{name}/bundle", "bundle"),
    ("infer_pipeline", "read", "POST /pipelines/{name}/infer", "infer"),
    ("infer_file", "read", None, "infer-file"),
    # replays: logged traffic through a candidate
    ("replay", "write", "POST /api/v1/pipelines/{name}/replays", "replay"),
    ("replays", "read", "GET /api/v1/replays", "replays list"),
    ("replay_run", "read", "GET /api/v1/replays/{replay_id}", "replays show"),
    ("replay_rows", "read", "GET /api/v1/replays/{replay_id}/rows", "replays rows"),
    # explanations: why a row was scored as it was
    ("explain_model", "read", "POST /api/v1/models/{ref}/explain", "models explain"),
    ("explain", "read", "GET /api/v1/pipelines/{name}/explanations/{request_id}", "explain"),
    ("importance", "read", "GET /api/v1/pipelines/{name}/importance", "importance"),
    # rollouts: a candidate brought in step by step, judged against the champion
    ("rollout", "write", "POST /api/v1/pipelines/{name}/rollouts", "rollout"),
    ("rollouts", "read", "GET /api/v1/rollouts", "rollouts list"),
    ("rollout_run", "read", "GET /api/v1/rollouts/{rollout_id}", "rollouts show"),
    ("control_rollout", "write", "POST /api/v1/rollouts/{rollout_id}/{action}", "rollouts control"),
    ("run_rollouts", "write", "POST /api/v1/rollouts/run", "rollouts run"),
    # the inference log
    ("query", "read", "POST /api/v1/query", "query"),
    ("pipeline_logs", "read", "GET /api/v1/pipelines/{name}/logs", "logs"),
    ("export_logs", "read", None, "logs"),
    ("add_ground_truth", "write", "POST /api/v1/pipelines/{name}/ground_truth", "ground-truth"),
    ("log_health", "read", "GET /api/v1/health/logs", "logs-health"),
    ("saved_queries", "read", "GET /api/v1/queries", "queries list"),
    ("save_query", "write", "PUT /api/v1/queries/{name}", "queries save"),
    ("delete_query", "write", "DELETE /api/v1/queries/{name}", "queries delete"),
    # monitors, alerts, audit
    ("build_assay", "write", None, None),
    ("build_monitor", "write", None, None),
    ("save_monitor", "write", "POST /api/v1/assays", "assays apply"),
    ("monitor", "read", "GET /api/v1/assays/{name}", "assays show"),
    ("monitors", "read", "GET /api/v1/assays", "assays list"),
    ("monitor_results", "read", "GET /api/v1/assays/{name}/results", "assays results"),
    ("preview_monitor", "read", "GET /api/v1/assays/{name}/preview", "assays preview"),
    ("delete_monitor", "write", "DELETE /api/v1/assays/{name}", "assays delete"),
    ("run_monitors", "write", "POST /api/v1/assays/run", "assays run"),
    ("alerts", "read", "GET /api/v1/alerts", "alerts"),
    ("acknowledge_alert", "write", "POST /api/v1/alerts/{alert_id}/acknowledge", "acknowledge"),
    ("audit", "read", "GET /api/v1/audit", "audit"),
    # streams
    ("build_stream", "write", "POST /api/v1/streams", "streams apply"),
    ("streams", "read", "GET /api/v1/streams", "streams list"),
    ("stream", "read", "GET /api/v1/streams/{name}", "streams status"),
    ("pause_stream", "write", "POST /api/v1/streams/{name}/pause", "streams pause"),
    ("resume_stream", "write", "POST /api/v1/streams/{name}/resume", "streams resume"),
    ("delete_stream", "write", "DELETE /api/v1/streams/{name}", "streams delete"),
    # jobs and connections
    ("upload_job", "write", "POST /api/v1/jobs/{name}", "jobs upload"),
    ("schedule_job", "write", "PUT /api/v1/jobs/{name}/schedule", "jobs schedule"),
    ("run_job", "write", "POST /api/v1/jobs/{name}/runs", "jobs run"),
    ("job_run", "read", "GET /api/v1/jobs/{name}/runs/{run_id}", None),
    ("job_runs", "read", "GET /api/v1/jobs/{name}/runs", "jobs runs"),
    ("job", "read", "GET /api/v1/jobs/{name}", "jobs show"),
    ("jobs", "read", "GET /api/v1/jobs", "jobs list"),
    ("delete_job", "write", "DELETE /api/v1/jobs/{name}", "jobs delete"),
    ("create_connection", "write", "POST /api/v1/connections", "connections create"),
    ("connections", "read", "GET /api/v1/connections", "connections list"),
    ("delete_connection", "write", "DELETE /api/v1/connections/{name}", "connections delete"),
)
