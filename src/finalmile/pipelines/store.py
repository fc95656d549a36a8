"""Pipeline versions, the model versions they pin, and deployments, in the same database as the model registry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session

from finalmile.errors import ConflictError, ModelNotFound, PipelineNotDeployed, PipelineNotFound
from finalmile.registry.store import (
    MetadataStore,
    check_model_name,
    named_row_for_update,
    stored_utc,
    utc_now,
    valid_key,
)
from finalmile.registry.tables import (
    DeploymentRow,
    ModelRow,
    ModelVersionRow,
    PipelinePinRow,
    PipelineRow,
    PipelineVersionRow,
)


@dataclass(frozen=True)
class PipelineVersionRecord:
    """One immutable pipeline version as stored: its spec, who made it, when."""

    name: str
    version: int
    spec: dict[str, Any]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class DeploymentRecord:
    """Which version of a pipeline is deployed, with what settings (shared by every server)."""

    name: str
    version: int
    config: dict[str, Any]
    active: bool
    updated_at: datetime


class PipelineStore:
    """Pipeline versions and deployments in the metadata database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self.engine = metadata.engine
        self._sessions = metadata.sessions

    def create_version(
        self,
        name: str,
        spec: dict[str, Any],
        model_refs: list[tuple[str, int]],
        created_by: str,
        number: int | None = None,
    ) -> PipelineVersionRecord:
        """A new immutable version pinning exactly `model_refs` (name, version) pairs; `number` inserts exactly that
        version (an edge site copying its central server's), a 409 if the pipeline has reached it."""
        check_model_name(name)
        for attempt in range(20):
            try:
                with self._sessions.begin() as s:
                    pins = [self._model_version_id(s, model, version) for model, version in set(model_refs)]
                    pipeline = self._pipeline_for_update(s, name, create=True)
                    if number is not None and number <= pipeline.last_version:
                        raise ConflictError(f"pipeline '{name}' already has versions up to {pipeline.last_version}")
                    pipeline.last_version = number if number is not None else pipeline.last_version + 1
                    row = PipelineVersionRow(
                        pipeline_id=pipeline.id,
                        version=pipeline.last_version,
                        spec=spec,
                        created_by=created_by,
                        created_at=utc_now(),
                    )
                    s.add(row)
                    s.flush()
                    s.add_all(PipelinePinRow(pipeline_version_id=row.id, model_version_id=p) for p in pins)
                    return _record(name, row)
            except sa_exc.IntegrityError:
                time.sleep(0.01 * (attempt + 1))
        raise ConflictError(f"could not allocate a version of pipeline '{name}' under contention; try again")

    def get_version(self, name: str, version: int | None = None) -> PipelineVersionRecord:
        with self._sessions() as s:
            pipeline = s.scalar(select(PipelineRow).where(PipelineRow.name == name))
            if pipeline is None:
                raise PipelineNotFound(name)
            if version is not None and not valid_key(version):
                raise PipelineNotFound(name, version)
            q = select(PipelineVersionRow).where(PipelineVersionRow.pipeline_id == pipeline.id)
            if version is None:
                q = q.order_by(PipelineVersionRow.version.desc()).limit(1)
            else:
                q = q.where(PipelineVersionRow.version == version)
            row = s.scalar(q)
            if row is None:
                raise PipelineNotFound(name, version)
            return _record(name, row)

    def latest(self, name: str) -> PipelineVersionRecord | None:
        """The latest version of `name`, or None for a pipeline that has none yet."""
        try:
            return self.get_version(name)
        except PipelineNotFound:
            return None

    def deployment(self, name: str) -> DeploymentRecord | None:
        """The active deployment of `name`, if any."""
        found = self._deployments(name)
        return found[0] if found else None

    def list_versions(self, name: str) -> list[PipelineVersionRecord]:
        with self._sessions() as s:
            rows = s.execute(
                select(PipelineVersionRow)
                .join(PipelineRow, PipelineRow.id == PipelineVersionRow.pipeline_id)
                .where(PipelineRow.name == name)
                .order_by(PipelineVersionRow.version)
            ).scalars()
            records = [_record(name, r) for r in rows]
        if not records:
            raise PipelineNotFound(name)
        return records

    def list_pipelines(self) -> list[str]:
        with self._sessions() as s:
            return list(s.scalars(select(PipelineRow.name).order_by(PipelineRow.name)))

    def set_deployment(self, name: str, version: int, config: dict[str, Any], active: bool = True) -> DeploymentRecord:
        if not valid_key(version):
            raise PipelineNotFound(name, version)
        with self._sessions.begin() as s:
            pipeline = self._pipeline_for_update(s, name)
            row = s.scalar(
                select(PipelineVersionRow).where(
                    PipelineVersionRow.pipeline_id == pipeline.id, PipelineVersionRow.version == version
                )
            )
            if row is None:
                raise PipelineNotFound(name, version)
            deployment = s.scalar(select(DeploymentRow).where(DeploymentRow.pipeline_id == pipeline.id))
            if deployment is None:
                deployment = DeploymentRow(pipeline_id=pipeline.id)
                s.add(deployment)
            deployment.pipeline_version_id = row.id
            deployment.config = config
            deployment.active = active
            deployment.updated_at = utc_now()
            s.flush()
            return DeploymentRecord(name, version, config, active, stored_utc(deployment.updated_at))

    def deactivate(self, name: str) -> None:
        with self._sessions.begin() as s:
            pipeline = self._pipeline_for_update(s, name)
            deployment = s.scalar(select(DeploymentRow).where(DeploymentRow.pipeline_id == pipeline.id))
            if deployment is None or not deployment.active:
                raise PipelineNotDeployed(name)
            deployment.active = False
            deployment.updated_at = utc_now()

    def deployments(self, active_only: bool = True) -> list[DeploymentRecord]:
        """Every deployment (the active ones by default): what the servers converge on."""
        return self._deployments(None, active_only)

    def _deployments(self, name: str | None, active_only: bool = True) -> list[DeploymentRecord]:
        with self._sessions() as s:
            q = (
                select(PipelineRow.name, PipelineVersionRow.version, DeploymentRow)
                .join(DeploymentRow, DeploymentRow.pipeline_id == PipelineRow.id)
                .join(PipelineVersionRow, PipelineVersionRow.id == DeploymentRow.pipeline_version_id)
            )
            if name is not None:
                q = q.where(PipelineRow.name == name)
            if active_only:
                q = q.where(DeploymentRow.active.is_(True))
            return [
                DeploymentRecord(name, version, d.config, d.active, stored_utc(d.updated_at))
                for name, version, d in s.execute(q)
            ]

    def _pipeline_for_update(self, s: Session, name: str, create: bool = False) -> PipelineRow:
        return named_row_for_update(s, PipelineRow, name, create, PipelineNotFound)

    def _model_version_id(self, s: Session, model: str, version: int) -> int:
        found = s.scalar(
            select(ModelVersionRow.id)
            .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
            .where(ModelRow.name == model, ModelVersionRow.version == version)
        )
        if found is None:
            raise ModelNotFound(model, version)
        return found


def _record(name: str, row: PipelineVersionRow) -> PipelineVersionRecord:
    return PipelineVersionRecord(name, row.version, row.spec, row.created_by, stored_utc(row.created_at))
