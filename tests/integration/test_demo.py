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
        routed = [e for e in client.services.audit.entries("pipeline fraud") if e.action == "route"]
        assert len(routed) == 1 and routed[0].after == "2"  # the monitor routed all traffic to the champion
        promoted, rolled_back = client.rollouts("fraud")
        assert (promoted.state, rolled_back.state) == ("promoted", "rolled_back"), (promoted, rolled_back)
        events = client.rollout_run(promoted.id).events
        assert [e.weight for e in events if e.decision != "hold"] == [25.0, 50.0, 100.0, 100.0]
        assert rolled_back.reason.startswith("score PSI")
        assert client.model("fraud@champion").version == 3  # the retrained forest
        serving = client.services.pipelines.deployment("fraud")
        assert (
            serving is not None
            and client.services.pipelines.get_version("fraud", serving.version).spec["steps"][0]["model"] == "fraud:3"
        )
        drift = client.monitor("challenger-amount-drift").results()
        assert len(drift) == 2 and drift.status.iloc[-1] == "alert"  # the ordinary window may be noisy: few rows
        assert (client.settings.home / "charts" / "challenger-amount-drift.png").stat().st_size > 10_000
        assert (client.settings.home / "charts" / "estimated-accuracy.png").stat().st_size > 10_000
        text = out.getvalue()
        (tmp_path / "demo.txt").write_text(text)
        estimated = re.findall(r"(ordinary|drifted)\s+│\s+\d+\s+│\s+([0-9.]+) \(", text)
        assert [phase for phase, _ in estimated] == ["ordinary", "drifted"], text.split("Quality before")[-1][:2000]
        assert float(estimated[1][1]) < float(estimated[0][1])  # the estimate fell with the drift, before labels
        assert re.search(r"Why request [0-9a-f]+ \(fraud:\d\): its output -?[0-9.]+ is the base value", text)
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
