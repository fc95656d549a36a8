"""The remote client's verbs for streams, jobs and connections (`/api/v1/streams`, `/api/v1/jobs`,
`/api/v1/connections`), and how a model or a job's file is sent: files are read here and uploaded, never read by
the server from the caller's path."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any

from finalmile.errors import BadRequestError, InvalidModelError
from finalmile.jobs.connections import ConnectionRecord
from finalmile.jobs.store import JobRecord, RunRecord
from finalmile.runtimes import detect_framework
from finalmile.sdk.refs import pipeline_name
from finalmile.sdk.wire import Carrier

JOB_POLL_S = 0.5
"""How often `run_job(wait=True)` asks the server whether the run has finished."""


class RemoteJobVerbs(Carrier):
    """Mixed into `RemoteClient`, the client's verbs for these nouns."""

    # -- streams --------------------------------------------------------------------------------------------------

    def build_stream(
        self, name: str, pipeline: Any, source: dict[str, Any], sink: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        body = {"name": name, "pipeline": pipeline_name(pipeline), "source": source, "sink": sink} | options
        return dict(self._json("build_stream", json=body))

    def streams(self) -> list[dict[str, Any]]:
        return list(self._json("streams"))

    def stream(self, name: str) -> dict[str, Any]:
        return dict(self._json("stream", params_in_path={"name": name}))

    def pause_stream(self, name: str) -> dict[str, Any]:
        return dict(self._json("pause_stream", params_in_path={"name": name}))

    def resume_stream(self, name: str) -> dict[str, Any]:
        return dict(self._json("resume_stream", params_in_path={"name": name}))

    def delete_stream(self, name: str) -> None:
        self._call("delete_stream", params_in_path={"name": name})

    # -- jobs and connections ---------------------------------------------------------------------------------

    def upload_job(self, name: str, path: str | Path, requirements: str | Path | None = None) -> JobRecord:
        """The job's file and requirements are read here and uploaded."""
        source = Path(path)
        if not source.is_file():
            raise BadRequestError(f"path: {source} is not a file", {"field": "path"})
        data = {"requirements": Path(requirements).read_text()} if requirements is not None else {}
        files = {"file": (source.name, source.read_bytes())}
        return JobRecord.from_payload(self._json("upload_job", params_in_path={"name": name}, data=data, files=files))

    def schedule_job(
        self,
        name: str,
        cron: str | None = None,
        tz: str = "UTC",
        timeout_s: float = 3600.0,
        retries: int = 0,
        deadline_s: float = 300.0,
    ) -> JobRecord:
        body = {"cron": cron, "tz": tz, "timeout_s": timeout_s, "retries": retries, "deadline_s": deadline_s}
        return JobRecord.from_payload(self._json("schedule_job", params_in_path={"name": name}, json=body))

    def run_job(self, name: str, wait: bool = True) -> RunRecord:
        """Start a run on the server; with `wait`, poll until it has finished."""
        run = RunRecord.from_payload(self._json("run_job", params_in_path={"name": name}))
        while wait and run.status == "running":
            time.sleep(JOB_POLL_S)
            run = self.job_run(name, run.id)
        return run

    def job_run(self, name: str, run_id: int) -> RunRecord:
        return RunRecord.from_payload(self._json("job_run", params_in_path={"name": name, "run_id": run_id}))

    def job_runs(self, name: str, limit: int = 20) -> list[RunRecord]:
        body = self._json("job_runs", params_in_path={"name": name}, params={"limit": limit})
        return [RunRecord.from_payload(r) for r in body]

    def job(self, name: str) -> JobRecord:
        return JobRecord.from_payload(self._json("job", params_in_path={"name": name}))

    def jobs(self) -> list[JobRecord]:
        return [JobRecord.from_payload(j) for j in self._json("jobs")]

    def delete_job(self, name: str) -> None:
        self._call("delete_job", params_in_path={"name": name})

    def create_connection(self, name: str, type: str, url: str) -> ConnectionRecord:
        body = {"name": name, "type": type, "url": url}
        return ConnectionRecord.from_payload(self._json("create_connection", json=body))

    def connections(self) -> list[ConnectionRecord]:
        return [ConnectionRecord.from_payload(c) for c in self._json("connections")]

    def delete_connection(self, name: str) -> None:
        self._call("delete_connection", params_in_path={"name": name})


def as_file(source: Any, framework: str | None, tmp: Path) -> Path:
    """A file to send: paths as they are (directories as a tar.gz), in-memory models saved in their own format."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InvalidModelError(f"{path}: no such file or directory")
        if path.is_dir():
            archive = tmp / f"{path.name}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(path, arcname=path.name)
            return archive
        return path
    kind = framework or detect_framework(source)
    if kind == "sklearn":
        import joblib

        target = tmp / "model.joblib"
        joblib.dump(source, target)
    elif kind == "xgboost":
        target = tmp / "model.ubj"
        (source.get_booster() if hasattr(source, "get_booster") else source).save_model(target)
    elif kind == "lightgbm" and hasattr(source, "booster_"):
        import joblib

        target = tmp / "model.joblib"  # keeps the wrapper's class labels
        joblib.dump(source, target)
    elif kind == "lightgbm":
        target = tmp / "model.txt"
        source.save_model(target)
    elif kind == "onnx":
        target = tmp / "model.onnx"
        target.write_bytes(source.SerializeToString())
    else:
        raise InvalidModelError(
            f"a {kind} model in memory cannot be sent to a server: save it to a file (a .py file or a directory "
            "for Python models, TorchScript or .pt2 for PyTorch) and upload the path"
        )
    return target
