"""`finalmile demo` tells the whole story, and the loop it closes really closes."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from finalmile import Client
from finalmile.cli.demo.run import run_demo


def test_the_demo_detects_the_drift_and_routes_traffic_back(tmp_path: Path) -> None:
    out = io.StringIO()
    with Client(home=tmp_path / "home") as client:
        run_demo(client, Console(file=out, width=160))
        deployed = client.services.pipelines.deployments()[0]
        weights = {
            v["name"]: v["weight"]
            for v in client.services.pipelines.get_version("fraud", deployed.version).spec["steps"][0]["variants"]
        }
        assert deployed.version == 2 and weights == {"champion": 1.0, "challenger": 0.0}
        drift = client.monitor("challenger-amount-drift").results()
        assert len(drift) == 2 and drift.status.iloc[-1] == "alert"  # the ordinary window may be noisy: few rows
        assert (client.settings.home / "charts" / "challenger-amount-drift.png").stat().st_size > 10_000
        text = out.getvalue()
        assert "route: done" in text and "The next 50 requests went to: champion." in text
        assert "http://127.0.0.1:8080/ui" in text
        token = re.search(r"fm_[A-Za-z0-9_-]+", text.split("Open the dashboard")[-1])
        assert token is not None, "the demo prints no login token"
        who = client.services.access.authenticate(token.group(0))
        assert who.role == "editor"

        again = io.StringIO()  # `make demo` a second time, on the same home: its monitors start over
        run_demo(client, Console(file=again, width=160))
        assert len(client.monitor("challenger-amount-drift").results()) == 2
        assert "route: done" in again.getvalue() and "The next 50 requests went to: champion." in again.getvalue()
