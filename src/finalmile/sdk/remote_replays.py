"""The remote client's replay verbs (`/api/v1/pipelines/{name}/replays`, `/api/v1/replays`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from finalmile.arrow.ipc import from_ipc
from finalmile.rollouts.store import ReplayRecord
from finalmile.sdk.refs import pipeline_name
from finalmile.sdk.replays import candidate_of
from finalmile.sdk.wire import Carrier, decode
from finalmile.serving.codecs import ARROW_STREAM

REPLAY_TIMEOUT_S = 3600.0
"""A replay answers when it has run: a week of traffic may take minutes."""


class RemoteReplayVerbs(Carrier):
    """Mixed into `RemoteClient`, the client's verbs for these nouns."""

    def replay(
        self,
        pipeline: Any,
        candidate: Any,
        start: Any = None,
        end: Any = None,
        sample: float | None = None,
        seed: int = 0,
        segment_by: str | None = None,
        label: str | None = None,
    ) -> ReplayRecord:
        """Replayed on the server (a long request: it answers when the replay has run)."""
        body = {"candidate": candidate_of(candidate), "sample": sample, "seed": seed}
        body |= {"segment_by": segment_by, "label": label}
        body |= {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in (("start", start), ("end", end))}
        where = {"name": pipeline_name(pipeline)}
        return decode(ReplayRecord, self._json("replay", params_in_path=where, json=body, timeout=REPLAY_TIMEOUT_S))

    def replays(self, pipeline: Any = None) -> list[ReplayRecord]:
        params = {"pipeline": pipeline_name(pipeline)} if pipeline is not None else {}
        return [decode(ReplayRecord, r) for r in self._json("replays", params=params)]

    def replay_run(self, replay_id: int) -> ReplayRecord:
        return decode(ReplayRecord, self._json("replay_run", params_in_path={"replay_id": replay_id}))

    def replay_rows(self, replay_id: int, limit: int | None = 1000) -> pa.Table:
        params = {"limit": limit} if limit is not None else {}
        response = self._call(
            "replay_rows", params_in_path={"replay_id": replay_id}, params=params, headers={"accept": ARROW_STREAM}
        )
        return from_ipc(response.content)
