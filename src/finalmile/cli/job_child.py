"""The child process a job runs in, inside its sandbox: `python -m finalmile.cli.job_child DIR JOB SLOT` imports
DIR's job and calls `main(ctx)`.

`ctx.client` is a remote `finalmile.Client` on the job's gateway (`FINALMILE_URL`, `FINALMILE_TOKEN`: a secret valid
while the run lasts, acting as the uploader in the job's workspace); `ctx.connections[name]` the workspace's stored
connections' URLs, handed in by the server (`FINALMILE_JOB_CONNECTIONS`; the child never holds the key);
`ctx.engine(name)` a SQLAlchemy engine on a database connection; `ctx.log` prints to the run's log; `ctx.slot` is
the scheduled time (ISO 8601, UTC) the run is for, None when run by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class JobContext:
    """What `main(ctx)` gets."""

    client: Any
    connections: dict[str, str]
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

        connections = json.loads(os.environ.pop("FINALMILE_JOB_CONNECTIONS", "{}"))
        client = Client(url=os.environ["FINALMILE_URL"], token=os.environ["FINALMILE_TOKEN"])
        try:
            run(JobContext(client, connections, job, slot))
        finally:
            client.close()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
