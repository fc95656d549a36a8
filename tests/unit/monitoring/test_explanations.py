"""Explanations: exact tree SHAP adds up to the model's own output and agrees with `shap` on the same model (a
scikit-learn forest in its sandbox, XGBoost on the margin); other models are explained by permutation within its
budget; a logged request is explained with the model that scored it; importance per window; bad input refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from finalmile.errors import InvalidInputError, NotFoundError
from tests.fixtures import multiclass, tabular

shap = pytest.importorskip("shap", reason="pip install 'finalmile[explain]'")
X, y = tabular(400)


def test_a_forest_is_explained_exactly_in_its_sandbox_and_agrees_with_shap(sqlite_client) -> None:  # type: ignore[no-untyped-def]
    client = sqlite_client  # the model alone: no store-specific path
    forest = RandomForestClassifier(30, max_depth=5, random_state=0).fit(X, y)
    mv = client.upload_model("m", forest, sample=X.head(50))
    explained = mv.explain(X.head(25))
    assert list(explained.columns) == [*X.columns, "base_value", "value"]
    np.testing.assert_allclose(explained.value, forest.predict_proba(X.head(25))[:, 1], atol=1e-6)  # additivity
    expected = np.asarray(shap.TreeExplainer(forest).shap_values(X.head(25)))[:, :, 1]
    np.testing.assert_allclose(explained[list(X.columns)].to_numpy(), expected, atol=1e-6)
    assert explained[list(X.columns)].abs().mean().idxmax() == "x0"  # the label is x0 + 0.5 x1


def test_xgboost_is_explained_on_its_margin_and_other_models_by_permutation(sqlite_client) -> None:  # type: ignore[no-untyped-def]
    client = sqlite_client  # the model alone: no store-specific path
    xgboost = pytest.importorskip("xgboost")
    boosted = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(X, y)
    explained = client.upload_model("b", boosted, sample=X.head(50)).explain(X.head(10))
    margin = boosted.get_booster().predict(xgboost.DMatrix(X.head(10)), output_margin=True)
    np.testing.assert_allclose(explained.value, margin, atol=1e-4)
    expected = np.asarray(shap.TreeExplainer(boosted).shap_values(X.head(10)))
    np.testing.assert_allclose(explained[list(X.columns)].to_numpy(), expected, atol=1e-4)

    linear = LogisticRegression().fit(X, y)
    explained = client.upload_model("l", linear, sample=X.head(50)).explain(X.head(5))
    np.testing.assert_allclose(explained.value, linear.predict_proba(X.head(5))[:, 1], atol=1e-6)
    assert (explained[list(X.columns)].abs().idxmax(axis=1) == "x0").sum() >= 3


def test_a_logged_request_and_importance_per_window(client) -> None:  # type: ignore[no-untyped-def]
    forest = RandomForestClassifier(30, max_depth=5, random_state=0).fit(X, y)
    client.upload_model("m", forest, sample=X.head(50))
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy()
    served = pipeline.infer_with_metadata(X.iloc[10:13])
    explained = pipeline.explain(served.request_id)
    assert explained.model.tolist() == ["m:1"] * 3 and explained.row.tolist() == [0, 1, 2]
    direct = client.model("m:1").explain(X.iloc[10:13])
    np.testing.assert_allclose(explained[list(X.columns)].to_numpy(), direct[list(X.columns)].to_numpy())
    for start in range(0, 200, 20):
        pipeline.infer(X.iloc[start : start + 20])
    now = datetime.now(UTC) + timedelta(seconds=1)
    found = client.importance("p", now - timedelta(hours=1), now, window="1h", rows=50)
    assert len(found) == len(X.columns) and set(found.rows) == {50}
    assert found.sort_values("mean_abs_contribution").feature.iloc[-1] == "x0"
    with pytest.raises(NotFoundError, match="no request 'nope'"):
        pipeline.explain("nope")


def test_bad_input_is_refused_naming_the_field(sqlite_client) -> None:  # type: ignore[no-untyped-def]
    client = sqlite_client  # the model alone: no store-specific path
    forest = RandomForestClassifier(5, max_depth=3, random_state=0).fit(X, y)
    mv = client.upload_model("m", forest, sample=X.head(50))
    with pytest.raises(InvalidInputError, match="rows: explain at most 1,000 rows"):
        mv.explain(pd.concat([X] * 3))
    with pytest.raises(InvalidInputError, match="rows: nothing"):
        mv.explain(X.head(0))
    Xm, ym = multiclass(200)
    several = client.upload_model("c", LogisticRegression().fit(Xm, ym), sample=Xm.head(20))
    with pytest.raises(InvalidInputError, match="model: only binary classifiers and regressors"):
        several.explain(Xm.head(3))


def test_the_dashboard_explains_a_row_linked_from_the_pipeline_page_and_sql(client) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import httpx

    from finalmile.http.server import create_app

    client.upload_model("m", RandomForestClassifier(10, max_depth=4, random_state=0).fit(X, y), sample=X.head(50))
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy()
    served = pipeline.infer_with_metadata(X.iloc[:2])
    token = client.services.init_access()[1]
    app = create_app(client.services, auth=True, background=False)

    async def browse() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            await http.post("/ui/login", data={"token": token, "next": "/ui"})
            page = await http.get(f"/ui/pipelines/p/explain/{served.request_id}")
            home = await http.get("/ui/pipelines/p")
            sql = await http.post("/ui/sql", data={"sql": "SELECT pipeline, request_id FROM logs", "csrf": _csrf(home)})
            return page, home, sql, await http.get("/ui/pipelines/p/explain/nope")

    page, home, sql, missing = asyncio.run(browse())
    assert page.status_code == 200, page.text
    assert 'id="why-0"' in page.text and 'id="why-1"' in page.text and "The bars add up to the answer" in page.text
    link = f'href="/ui/pipelines/p/explain/{served.request_id}"'
    assert link in home.text and link in sql.text
    assert missing.status_code == 404


def _csrf(page) -> str:  # type: ignore[no-untyped-def]
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_the_cli_explains_a_request_a_file_and_importance(cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    from finalmile import Client
    from tests.unit.cli.test_cli import run

    with Client() as client:
        client.upload_model("m", RandomForestClassifier(10, max_depth=4, random_state=0).fit(X, y), sample=X.head(50))
        pipeline = client.build_pipeline("p").add_model_step("m:1")
        pipeline.deploy()
        request_id = pipeline.infer_with_metadata(X.iloc[:1]).request_id
        pipeline.infer(X.iloc[1:40])
    code, out, err = run(capsys, "explain", "p", request_id)
    assert code == 0, err
    assert f"row 0 of {request_id} (m:1)" in out and "base" in out and "x0" in out and "█" in out
    X.head(3).to_csv(cli_env / "rows.csv", index=False)
    code, out, err = run(capsys, "models", "explain", "m:1", "--input", str(cli_env / "rows.csv"),
                         "--output", str(cli_env / "why.csv"))  # fmt: skip
    assert code == 0, err
    assert list(pd.read_csv(cli_env / "why.csv").columns) == [*X.columns, "base_value", "value"]
    code, out, err = run(capsys, "importance", "p", "--since", "1h", "--window", "1h", "--rows", "20")
    assert code == 0 and "x0" in out, err
    code, _, err = run(capsys, "explain", "p", "nope")
    assert code == 1 and "no request 'nope'" in err and "Traceback" not in err
