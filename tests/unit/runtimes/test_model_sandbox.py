"""A model that runs uploaded code (a Python model, a pickle) runs in a sandboxed child: an editor of workspace
`a` deploys one that tries the escapes a job would, at load and in predict, and finds nothing of `b`'s, no secret,
no network; a data-only model stays in the server's process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.config import FinalmileSettings
from finalmile.runtimes.sandboxed import SandboxedRuntime
from finalmile.sandbox import bwrap_path
from tests.fixtures import tabular

ESCAPER = """
import json, os, socket

HOME = {home!r}


def probe(action):
    try:
        return "GOT " + json.dumps(action(), default=str)[:4000]
    except BaseException as exc:
        return "REFUSED " + type(exc).__name__


def files(folder):  # every file it can see under the store's home
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


class Escaper:
    def load(self, directory):
        self.at_load = probe(lambda: files(HOME))

    def predict(self, frame):
        found = {{
            "at_load": self.at_load,
            "home": probe(lambda: files(HOME)),
            "database": probe(lambda: open(os.path.join(HOME, "finalmile.db"), "rb").read(16)),
            "secrets": probe(lambda: [k for k in os.environ if "SECRET" in k or "DATABASE" in k or "TOKEN" in k]),
            "postgres": probe(lambda: connect(5432)),
            "uid": probe(os.getuid),
        }}
        return pd.DataFrame({{"what": list(found), "found": list(found.values())}}).head(len(frame))
"""


@pytest.mark.skipif(
    bwrap_path() is None and not os.environ.get("FINALMILE_REQUIRE_SANDBOX"),
    reason="needs Debian's bubblewrap (.ci/run installs it and makes this test mandatory)",
)
def test_a_python_model_of_workspace_a_reaches_nothing_beyond_its_artifact(
    home: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("FINALMILE_SECRET_KEY", key)  # in the server's environment: never in the model's
    source = tmp_path / "escaper.py"
    source.write_text("import pandas as pd\n" + ESCAPER.format(home=str(home)))
    X, y = tabular(40)
    settings = FinalmileSettings(home=home, database_url=database_url, secret_key=key, sandbox="bwrap")
    with Client(settings=settings) as root:
        root.services.create_workspace("a")
        root.services.create_workspace("b")
        root.services.for_workspace("b").upload_model("b-model", LogisticRegression().fit(X, y), sample=X.head(5))
        with Client(settings=settings, workspace="a") as a:
            a.upload_model("escaper", f"{source}:Escaper")
            a.build_pipeline("probe").add_model_step("escaper:1").deploy()
            out = a.pipeline("probe").infer(pd.DataFrame({"x": [0.0] * 6}))
            runtime = a.services.loader.load(a.services.metadata.get_version("escaper", 1))
            assert isinstance(runtime, SandboxedRuntime)
    found = dict(zip(out["what"], out["found"], strict=True))
    for what in ("at_load", "home"):  # the folders down to its own unpacked artifact, and its files alone
        seen = json.loads(found[what].removeprefix("GOT "))
        assert seen and all(path.startswith("workspaces/a/") and "escaper.py" in "".join(seen) for path in seen), found
        assert not any("b-model" in path or "workspaces/b" in path or path.endswith(".db") for path in seen), found
    for what in ("database", "postgres"):
        assert found[what].startswith("REFUSED"), found
    assert found["secrets"] == "GOT []" and found["uid"] == "GOT 65534", found


def test_a_converted_model_stays_in_process(client: Client) -> None:
    X, y = tabular(60)
    mv = client.upload_model("lr", LogisticRegression().fit(X, y), sample=X.head(10))
    runtime = client.services.loader.load(client.services.metadata.get_version("lr", mv.version))
    assert runtime.framework == "onnx" and not isinstance(runtime, SandboxedRuntime)
    native = client.services.loader.load(client.services.metadata.get_version("lr", mv.version), runtime="native")
    assert isinstance(native, SandboxedRuntime)  # the pickle itself runs sealed
