"""Plain Python models: classes, instances with state, files and directories, stored with their source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finalmile import Client
from finalmile.errors import InvalidModelError, PredictionError
from tests.fixtures import ErrorModel, ScaledSumModel, SumModel

FRAME = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]})


def test_a_class_is_stored_with_its_source(client: Client) -> None:
    mv = client.upload_model("sum", SumModel, sample=FRAME)
    assert mv.framework == "python"
    assert [c.name for c in mv.schema.outputs] == ["total"]
    assert list(mv.predict(FRAME).total) == [11.0, 22.0, 33.0]


def test_an_instance_keeps_its_state(client: Client) -> None:
    mv = client.upload_model("scaled", ScaledSumModel(factor=0.5), sample=FRAME)
    assert list(mv.predict(FRAME).scaled) == [5.5, 11.0, 16.5]
    # A fresh handle loads from the stored artifact, not from this process's object.
    assert list(client.model("scaled:1").predict(FRAME.head(1)).scaled) == [5.5]


def test_a_py_file_and_a_directory_with_data_and_load(client: Client, tmp_path: Path) -> None:
    (tmp_path / "doubler.py").write_text(
        "import pandas as pd\n\nclass Doubler:\n    def predict(self, frame):\n        return frame['a'] * 2\n"
    )
    assert list(client.upload_model("file", tmp_path / "doubler.py").predict(FRAME).a) == [2.0, 4.0, 6.0]

    model_dir = tmp_path / "lookup"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("3.0")
    (model_dir / "helpers.py").write_text("def scale(x, w):\n    return x * w\n")
    (model_dir / "model.py").write_text(
        "from pathlib import Path\nimport pandas as pd\nfrom helpers import scale\n\n"
        "class Lookup:\n"
        "    def load(self, directory):\n"
        "        self.w = float((Path(directory) / 'weights.txt').read_text())\n"
        "    def predict(self, frame):\n"
        "        return pd.DataFrame({'y': scale(frame['a'], self.w)})\n"
    )
    mv = client.upload_model("dir", model_dir, sample=FRAME)
    assert list(mv.predict(FRAME).y) == [3.0, 6.0, 9.0]
    (model_dir / "weights.txt").write_text("100")  # the stored copy is what runs
    assert list(client.model("dir").predict(FRAME).y) == [3.0, 6.0, 9.0]


def test_a_class_named_explicitly_in_a_file_with_several(client: Client, tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        "class A:\n    def predict(self, frame):\n        return frame['a']\n"
        "class B:\n    def predict(self, frame):\n        return frame['b']\n"
    )
    mv = client.upload_model("two", f"{tmp_path / 'two.py'}:B")
    assert list(mv.predict(FRAME)["b"]) == [10.0, 20.0, 30.0]


def test_a_failing_model_raises_a_prediction_error(client: Client) -> None:
    mv = client.upload_model("err", ErrorModel)
    with pytest.raises(PredictionError, match="this model always fails"):
        mv.predict(FRAME)
    with pytest.raises(InvalidModelError, match="the model failed on the sample: ValueError"):
        client.upload_model("err", ErrorModel, sample=FRAME)
    assert [v.version for v in client.model_versions("err")] == [1]


def test_a_model_returning_the_wrong_number_of_rows(client: Client, tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("class Short:\n    def predict(self, frame):\n        return [1.0]\n")
    with pytest.raises(PredictionError, match="returned 1 rows for 3 input rows"):
        client.upload_model("short", tmp_path / "short.py").predict(FRAME)


def test_schema_given_explicitly_validates_inputs(client: Client) -> None:
    from finalmile import SchemaError

    schema = {"inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}]}
    mv = client.upload_model("typed", SumModel, schema=schema)
    with pytest.raises(SchemaError, match="column 'b': missing"):
        mv.predict(FRAME[["a"]])
    assert np.allclose(mv.predict(FRAME.assign(c=1.0)).total, [11.0, 22.0, 33.0])  # extra columns are not passed
