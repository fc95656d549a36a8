"""The child process a job runs in: `python -m finalmile.cli.job_child DIR JOB SLOT` imports DIR's job and calls
`main(ctx)`.

`ctx.client` is an embedded `finalmile.Client` on the server's store and workspace; `ctx.connections[name]` the
stored connections' URLs (decrypted with the server's FINALMILE_SECRET_KEY); `ctx.engine(name)` a SQLAlchemy engine
on a database connection; `ctx.log` prints to the run's log; `ctx.slot` is the scheduled time (ISO 8601, UTC) the
run is for, None when run by hand.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Connections(Mapping[str, str]):
    """The stored connections by name, read when first asked for."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getitem__(self, name: str) -> str:
        return str(self._client.services.connections.url(name))

    def __iter__(self) -> Any:
        return iter(c.name for c in self._client.services.connections.list())

    def __len__(self) -> int:
        return len(self._client.services.connections.list())


@dataclass
class JobContext:
    """What `main(ctx)` gets."""

    client: Any
    connections: Connections
    job: str
    slot: str | None

    def log(self, *parts: object) -> None:
        print(*parts, flush=True)

    def engine(self, name: str) -> Any:
        """A SQLAlchemy engine on the database connection `name`, with the driver finalmile installs for its type
        (psycopg for PostgreSQL, PyMySQL for MariaDB/MySQL) whatever the URL's own scheme said."""
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        url = make_url(self.connections[name])
        url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
        return create_engine(url, pool_pre_ping=True)


_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def main() -> int:
    directory, job, slot = Path(sys.argv[1]), sys.argv[2], (sys.argv[3] or None)
    entry = directory / "main.py" if (directory / "main.py").exists() else directory / "job.py"
    sys.path.insert(0, str(directory))
    try:
        spec = importlib.util.spec_from_file_location("finalmile_job", entry)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = getattr(module, "main", None)
        if run is None:
            print(f"{entry.name} defines no main(ctx)", file=sys.stderr)
            return 2
        from finalmile.client import Client

        with Client() as client:
            client.services.sync()  # serve the store's deployments in this process, as `finalmile serve` does
            run(JobContext(client, Connections(client), job, slot))
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
