"""SQLAlchemy models of the metadata store. The Alembic migrations under `migrations/` create exactly these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The declarative base of every metadata table."""

    pass


class ModelRow(Base):
    """A registered model name."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    """Version numbers are never reused, even after a delete: `fraud:3` always means the same artifact."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelVersionRow(Base):
    """One immutable model version and its artifacts."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    framework: Mapped[str] = mapped_column(String(32))
    runtime: Mapped[str] = mapped_column(String(32))
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    onnx_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    sample_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    model_schema: Mapped[dict[str, Any]] = mapped_column("schema", JSON)
    task: Mapped[str | None] = mapped_column(String(32))
    classes: Mapped[list[Any] | None] = mapped_column(JSON)
    conversion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    libraries: Mapped[dict[str, str]] = mapped_column(JSON)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelAliasRow(Base):
    """An alias pointing at one version of a model."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(100))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)


class PipelineRow(Base):
    """A pipeline name."""

    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PipelineVersionRow(Base):
    """One immutable pipeline version."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline_id", "version", name="uq_pipeline_versions_pipeline_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PipelinePinRow(Base):
    """A pipeline version pins the exact model versions it runs: those cannot be deleted."""

    __tablename__ = "pipeline_pins"

    pipeline_version_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_versions.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True, index=True)


class DeploymentRow(Base):
    """What should be running: one row per pipeline; the server converges on these rows."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), unique=True)
    pipeline_version_id: Mapped[int] = mapped_column(ForeignKey("pipeline_versions.id"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MonitorRow(Base):
    """A saved monitor (drift assay, check rate, performance, error rate, latency): its config and progress."""

    __tablename__ = "monitors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """The end of the next window the scheduler computes; it moves on only after that window's result is stored."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MonitorResultRow(Base):
    """One window's result of a monitor."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), index=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    group: Mapped[str] = mapped_column("group_key", String(200), default="")
    rows: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertRow(Base):
    """An alert a monitor raised."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int | None] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), index=True)
    """None for the store's own alerts (a log file set aside), which name their `subject` instead."""
    result_id: Mapped[int | None] = mapped_column(ForeignKey("monitor_results.id", ondelete="CASCADE"))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    level: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Who said they have seen it (the dashboard's button); an alert nobody acknowledged is open."""
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ActionRunRow(Base):
    """One action taken (or attempted) for an alert; also what cooldowns are measured from."""

    __tablename__ = "action_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), index=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    """`done`, `failed`, or `cooldown` (skipped: the same action ran too recently)."""
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """One state change: who, when, what, and the value before and after (append-only)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(400), index=True)
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)


class StoreIdentityRow(Base):
    """The store's one random id (made by its migration): what names its applications in a shared Ray cluster."""

    __tablename__ = "store_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)


class WorkspaceRow(Base):
    """A workspace: the team that models, pipelines, logs and monitors belong to."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserRow(Base):
    """A person or a service account; what they may do is their membership's role in each workspace."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    """argon2id, for the dashboard's login form; None: the user signs in with tokens only."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MemberRow(Base):
    """A user's role (`viewer`, `editor`, `owner`) in one workspace."""

    __tablename__ = "members"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class TokenRow(Base):
    """An API token: only its SHA-256 is stored (the secret is shown once); scoped to a workspace and a role."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The token's first characters, to tell tokens apart in a list without revealing them."""
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConnectionRow(Base):
    """A named set of connection details (database, directory, broker) whose URL is stored encrypted."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    url_encrypted: Mapped[str] = mapped_column(Text)
    """Fernet token of the URL, under the key in `FINALMILE_SECRET_KEY`; never stored or logged in clear."""
    url_masked: Mapped[str] = mapped_column(Text)
    """The URL with its password and secret parameters replaced by `***`: what lists and the audit trail show."""
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SavedQueryRow(Base):
    """A SQL query over the log views, saved by name for the workspace (the dashboard's SQL page)."""

    __tablename__ = "saved_queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    sql: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StreamRow(Base):
    """A stream: its configuration (`StreamConfig`), whether it is paused, and the counters its runner reported last."""

    __tablename__ = "streams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobRow(Base):
    """A scheduled job: its code (a Python file or a zip with `main(ctx)`), its schedule and limits."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    code: Mapped[bytes] = mapped_column(LargeBinary)
    requirements: Mapped[str | None] = mapped_column(Text, nullable=True)
    """pip requirements text: the job runs in an environment with these installed (None: the server's own)."""
    cron: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tz: Mapped[str] = mapped_column(String(100), default="UTC")
    timeout_s: Mapped[float] = mapped_column(Float, default=3600.0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    deadline_s: Mapped[float] = mapped_column(Float, default=300.0)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRunRow(Base):
    """One run of a job: for a scheduled slot (unique per job, so each slot runs once) or started by hand."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(100), index=True)
    slot: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    runner: Mapped[str] = mapped_column(String(200))
