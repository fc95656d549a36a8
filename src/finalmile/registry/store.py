"""Repository functions over the metadata store: the only module that speaks SQL about models.

Callers get plain `VersionRecord`s back, never ORM objects, so nothing outside leaks a session.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from finalmile.errors import (
    AliasNotFound,
    ConflictError,
    InvalidInputError,
    InvalidNameError,
    ModelNotFound,
    NotFoundError,
    VersionPinnedError,
)
from finalmile.registry.db import create_store_engine, migrate
from finalmile.registry.tables import (
    Base,
    ModelAliasRow,
    ModelRow,
    ModelVersionRow,
    PipelinePinRow,
    PipelineRow,
    PipelineVersionRow,
    StoreIdentityRow,
)


@dataclass(frozen=True)
class NewVersion:
    """What an upload hands the store; the store assigns the version number."""

    framework: str
    runtime: str
    artifact_sha256: str
    onnx_sha256: str | None
    sample_sha256: str | None
    schema: dict[str, Any]
    task: str | None
    classes: list[Any] | None
    conversion: dict[str, Any] | None
    libraries: dict[str, str]
    tags: dict[str, str]
    created_by: str


@dataclass(frozen=True)
class VersionRecord(NewVersion):
    """One immutable model version as stored: what was uploaded, plus what the store assigned."""

    name: str
    version: int
    created_at: datetime
    aliases: list[str] = field(default_factory=list)


_UPLOADED = [f.name for f in fields(NewVersion)]


@dataclass(frozen=True)
class ModelSummary:
    """A registered model at a glance: how many versions, the latest, its aliases."""

    name: str
    versions: int
    latest: int
    aliases: dict[str, int]
    created_at: datetime


class MetadataStore:
    """Models, versions and aliases in SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_store_engine(url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        """Sessions on the one engine; the pipeline and monitor stores share it (one pool, one migration)."""

    def close(self) -> None:
        self.engine.dispose()

    @functools.cached_property
    def store_id(self) -> str:
        """This store's random id, the same for every process that opens it (however its URL is spelled)."""
        with self.sessions() as s:
            found = s.scalar(select(StoreIdentityRow.id))
        assert found is not None, "made by migration 0011"
        return found

    # -- writes -------------------------------------------------------------------------------------------------

    def create_version(
        self, name: str, new: NewVersion, alias: str | None = None, number: int | None = None
    ) -> VersionRecord:
        """Insert the next version of `name` (creating the model on its first upload); `number` inserts exactly that
        version instead (an edge site copying its central server's, `edge/bundle.py`), a 409 if it exists.

        The model row is locked while its counter moves (SQLite: the write lock taken at BEGIN; PostgreSQL: FOR
        UPDATE), so concurrent uploads get distinct numbers. Two first uploads of a new name race to create the
        model row; the loser hits the unique constraint and retries.
        """
        for attempt in range(20):
            try:
                with self.sessions.begin() as s:
                    model = self._model_for_update(s, name, create=True)
                    if number is not None and number <= model.last_version:
                        raise ConflictError(f"model '{name}' already has versions up to {model.last_version}")
                    model.last_version = number if number is not None else model.last_version + 1
                    uploaded = {("model_schema" if f == "schema" else f): getattr(new, f) for f in _UPLOADED}
                    row = ModelVersionRow(
                        model_id=model.id, version=model.last_version, created_at=utc_now(), **uploaded
                    )
                    s.add(row)
                    s.flush()
                    if alias:
                        self._point_alias(s, model, alias, row)
                    return self._record(s, name, row)
            except sa_exc.IntegrityError:
                time.sleep(0.01 * (attempt + 1))
        raise ConflictError(f"could not allocate a version of model '{name}' under contention; try again")

    def set_alias(self, name: str, version: int, alias: str) -> VersionRecord:
        check_alias_name(alias)
        with self.sessions.begin() as s:
            model = self._model_for_update(s, name)
            row = self._version_row(s, model, version)
            self._point_alias(s, model, alias, row)
            return self._record(s, name, row)

    def delete_alias(self, name: str, alias: str) -> None:
        with self.sessions.begin() as s:
            model = self._model_for_update(s, name)
            row = s.scalar(
                select(ModelAliasRow).where(ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias)
            )
            if row is None:
                raise AliasNotFound(name, alias)
            s.delete(row)

    def delete_version(self, name: str, version: int) -> VersionRecord:
        """Delete one version; refused while an alias or a pipeline version pins it."""
        with self.sessions.begin() as s:
            model = self._model_for_update(s, name)
            row = self._version_row(s, model, version)
            pins = [f"alias '{a}'" for a in self._aliases_of(s, row.id)]
            pins += [
                f"pipeline '{p}' version {v}"
                for p, v in s.execute(
                    select(PipelineRow.name, PipelineVersionRow.version)
                    .join(PipelineVersionRow, PipelineVersionRow.pipeline_id == PipelineRow.id)
                    .join(PipelinePinRow, PipelinePinRow.pipeline_version_id == PipelineVersionRow.id)
                    .where(PipelinePinRow.model_version_id == row.id)
                )
            ]
            if pins:
                raise VersionPinnedError(name, version, pins)
            record = self._record(s, name, row)
            s.delete(row)
            return record

    def artifact_in_use(self, sha256: str) -> bool:
        with self.sessions() as s:
            q = select(func.count()).where(
                (ModelVersionRow.artifact_sha256 == sha256)
                | (ModelVersionRow.onnx_sha256 == sha256)
                | (ModelVersionRow.sample_sha256 == sha256)
            )
            return bool(s.scalar(q))

    # -- reads --------------------------------------------------------------------------------------------------

    def get_version(self, name: str, version: int | None = None, alias: str | None = None) -> VersionRecord:
        """A version by number, by alias, or the latest when neither is given."""
        with self.sessions() as s:
            model = s.scalar(select(ModelRow).where(ModelRow.name == name))
            if model is None:
                raise ModelNotFound(name)
            if alias is not None:
                row = s.scalar(
                    select(ModelVersionRow)
                    .join(ModelAliasRow, ModelAliasRow.version_id == ModelVersionRow.id)
                    .where(ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias)
                )
                if row is None:
                    raise AliasNotFound(name, alias)
            elif version is not None:
                row = self._version_row(s, model, version)
            else:
                row = s.scalar(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.model_id == model.id)
                    .order_by(ModelVersionRow.version.desc())
                    .limit(1)
                )
                if row is None:
                    raise ModelNotFound(name, "latest")
            return self._record(s, name, row)

    def get_by_ref(self, ref: str) -> VersionRecord:
        """A version by reference: `name` (latest), `name:3`, or `name@champion`."""
        name, version, alias = parse_ref(ref)
        return self.get_version(name, version=version, alias=alias)

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.sessions() as s:
            model = s.scalar(select(ModelRow).where(ModelRow.name == name))
            if model is None:
                raise ModelNotFound(name)
            rows = s.scalars(
                select(ModelVersionRow).where(ModelVersionRow.model_id == model.id).order_by(ModelVersionRow.version)
            )
            return [self._record(s, name, r) for r in rows]

    def list_models(self) -> list[ModelSummary]:
        with self.sessions() as s:
            stats = {
                model_id: (count, latest)
                for model_id, count, latest in s.execute(
                    select(ModelVersionRow.model_id, func.count(), func.max(ModelVersionRow.version)).group_by(
                        ModelVersionRow.model_id
                    )
                )
            }
            aliases: dict[int, dict[str, int]] = {}
            for model_id, alias, version in s.execute(
                select(ModelAliasRow.model_id, ModelAliasRow.alias, ModelVersionRow.version).join(
                    ModelVersionRow, ModelVersionRow.id == ModelAliasRow.version_id
                )
            ):
                aliases.setdefault(model_id, {})[alias] = version
            return [
                ModelSummary(m.name, *stats.get(m.id, (0, 0)), aliases.get(m.id, {}), stored_utc(m.created_at))
                for m in s.scalars(select(ModelRow).order_by(ModelRow.name))
            ]

    # -- helpers ------------------------------------------------------------------------------------------------

    def _model_for_update(self, s: Session, name: str, create: bool = False) -> ModelRow:
        return named_row_for_update(s, ModelRow, name, create, ModelNotFound)

    def _version_row(self, s: Session, model: ModelRow, version: int) -> ModelVersionRow:
        if not valid_key(version):
            raise ModelNotFound(model.name, version)
        row = s.scalar(
            select(ModelVersionRow).where(ModelVersionRow.model_id == model.id, ModelVersionRow.version == version)
        )
        if row is None:
            raise ModelNotFound(model.name, version)
        return row

    def _point_alias(self, s: Session, model: ModelRow, alias: str, row: ModelVersionRow) -> None:
        check_alias_name(alias)
        existing = s.scalar(
            select(ModelAliasRow).where(ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias)
        )
        if existing is None:
            s.add(ModelAliasRow(model_id=model.id, alias=alias, version_id=row.id))
        else:
            existing.version_id = row.id
        s.flush()

    def _aliases_of(self, s: Session, version_id: int) -> list[str]:
        return list(s.scalars(select(ModelAliasRow.alias).where(ModelAliasRow.version_id == version_id)))

    def _record(self, s: Session, name: str, row: ModelVersionRow) -> VersionRecord:
        uploaded = {f: getattr(row, "model_schema" if f == "schema" else f) for f in _UPLOADED}
        return VersionRecord(
            **uploaded,
            name=name,
            version=row.version,
            created_at=stored_utc(row.created_at),
            aliases=sorted(self._aliases_of(s, row.id)),
        )


Named = TypeVar("Named", ModelRow, PipelineRow)


def named_row_for_update(
    s: Session, row_class: type[Named], name: str, create: bool, not_found: Callable[[str], Exception]
) -> Named:
    """The row called `name` (a model or a pipeline), locked while its version counter moves.

    PostgreSQL takes a row lock (FOR UPDATE); SQLite already holds the database's write lock from BEGIN IMMEDIATE.
    With `create`, a missing row is made (two first uploads racing to create it meet the unique constraint, and the
    caller retries).
    """
    q = select(row_class).where(row_class.name == name)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    row = s.scalar(q)
    if row is None:
        if not create:
            raise not_found(name)
        check_model_name(name)
        row = row_class(name=name, last_version=0, created_at=utc_now())
        s.add(row)
        s.flush()
    return row


Row = TypeVar("Row", bound=Base)


def row_named(s: Session, row_class: type[Row], name: str, what: str, field: str) -> Row:
    """The row of `row_class` whose `name` column is `name`, or a 404 naming what was looked for."""
    column: Any = row_class.name  # type: ignore[attr-defined]  # each class passed has a unique `name` column
    row: Row | None = s.execute(select(row_class).where(column == name)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no {what} named {name!r}", {field: name})
    return row


MAX_KEY = 2**31 - 1


def valid_key(number: int) -> bool:
    """Version numbers and row ids are positive 32-bit integers (SQL INTEGER); anything else a caller sends names
    no row, and must not reach SQL: SQLite raises on an integer past 64 bits, a 500 instead of a 404."""
    return 1 <= number <= MAX_KEY


def utc_now() -> datetime:
    return datetime.now(UTC)


def stored_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_model_name(name: str) -> None:
    """Names become path segments, log partitions and SQL values: printable, no separators, no leading dot."""
    if (
        not name
        or len(name) > 200
        or any(c in name for c in ":@/\\ \t\n")
        or name.startswith(".")
        or not name.isprintable()
    ):
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-200 printable characters without spaces, ':', '@' or slashes",
            {"name": name},
        )


def check_alias_name(alias: str) -> None:
    if (
        not alias
        or len(alias) > 100
        or alias.isdigit()
        or any(c in alias for c in ":@/\\ \t\n")
        or not alias.isprintable()
    ):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-100 printable characters, not only digits, without spaces, ':', '@' "
            "or slashes",
            {"alias": alias},
        )


_REF = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[^:@]+))?$", re.ASCII)


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`fraud` -> latest; `fraud:3` -> version 3; `fraud@champion` -> what the alias points at."""
    match = _REF.match(ref.strip())
    if not match:
        raise InvalidNameError(f"invalid model reference {ref!r}: use NAME, NAME:VERSION or NAME@ALIAS")
    version = match.group("version")
    return match.group("name"), int(version) if version else None, match.group("alias")


def check_plain_name(name: str, field: str) -> str:
    """Workspace and user names: 1-100 letters, digits, `.`, `_` or `-`, starting with a letter or digit."""
    if not (0 < len(name) <= 100 and name[0].isalnum() and all(c.isalnum() or c in "._-" for c in name)):
        raise InvalidInputError(
            f"{field}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit; got {name!r}",
            {"field": field},
        )
    if not name.isascii():
        raise InvalidInputError(f"{field}: use ASCII letters and digits; got {name!r}", {"field": field})
    return name
