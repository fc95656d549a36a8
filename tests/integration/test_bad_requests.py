"""Bad input on a live server gets a 4xx whose JSON names the field and the problem, never a 5xx (issue 13)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import BadRequestError
from tests.integration.conftest import Server, start_server

rng = np.random.default_rng(0)
X = pd.DataFrame(rng.standard_normal((200, 3)), columns=["amount", "age", "v1"])
y = (X.amount > 0).astype(int)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Client]]:
    home = tmp_path_factory.mktemp("bad-requests")
    client = Client(home=home)
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
    client.build_pipeline("p").add_model_step("m:1").deploy()
    server = start_server(home, {"FINALMILE_MAX_BODY_BYTES": str(64 * 1024)})
    yield server, client
    server.stop()
    client.close()


def _refused(response: httpx.Response, status: int, *words: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    for word in words:
        assert word in body["error"], body
    assert "/tmp/" not in response.text and "Traceback" not in response.text
    return dict(body)


def _v2(datatype: str, values: list[object]) -> bytes:
    inputs = [{"name": c, "shape": [len(values)], "datatype": datatype, "data": values} for c in X.columns]
    return json.dumps({"inputs": inputs}).encode()  # the standard library writes integers wider than 64 bits


@pytest.mark.parametrize(("datatype", "value"), [("INT8", 300), ("UINT64", -1), ("INT64", 2**70), ("UINT8", -5)])
def test_integers_that_overflow_their_type_are_a_400_naming_the_input(
    served: tuple[Server, Client], datatype: str, value: int
) -> None:
    server, _ = served
    response = httpx.post(f"{server.url}/v2/models/p/infer", content=_v2(datatype, [value]))
    _refused(response, 400, "input 'amount'", f"datatype {datatype}")  # V2: the protocol's 400


def test_fp16_tensors_are_served_as_the_safe_widening_they_are(served: tuple[Server, Client]) -> None:
    server, client = served
    rows = X.head(3).astype(np.float16)
    body = orjson.dumps(
        {"inputs": [{"name": c, "shape": [3], "datatype": "FP16", "data": rows[c].astype(float).tolist()} for c in X]}
    )
    response = httpx.post(f"{server.url}/v2/models/p/infer", content=body)
    assert response.status_code == 200, response.text
    expected = client.model("m:1").predict(rows.astype(np.float64))
    score = next(o for o in response.json()["outputs"] if o["name"] == "score")["data"]
    np.testing.assert_allclose(score, expected.score, rtol=1e-6)


@pytest.mark.parametrize("segment", ["%C2%B2", "%D9%A3", "1.5", "-1"])
def test_a_version_that_is_not_a_plain_number_is_a_400_naming_it(served: tuple[Server, Client], segment: str) -> None:
    server, _ = served
    response = httpx.post(f"{server.url}/v2/models/p/versions/{segment}/infer", content=_v2("FP64", [1.0]))
    assert response.status_code in (400, 404), response.text
    assert "version" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "names"),
    [
        ("GET", "/api/v1/jobs/nightly/runs/{big}", "run"),
        ("POST", "/api/v1/alerts/{big}/acknowledge", "alert"),
        ("GET", "/api/v1/models/m:{big}", "version"),
        ("POST", "/v2/models/p/versions/{big}/infer", "version"),
    ],
)
def test_an_id_too_large_for_any_row_is_a_404_naming_it(
    served: tuple[Server, Client], method: str, path: str, names: str
) -> None:
    server, _ = served
    for big in (2**31, 2**70):  # past what the column holds, and past what SQLite can bind
        response = httpx.request(method, server.url + path.format(big=big), content=_v2("FP64", [1.0]))
        _refused(response, 404, names, str(big))


def test_a_query_answers_json_whatever_types_its_columns_hold(served: tuple[Server, Client]) -> None:
    """Bytes, intervals, unions and DuckDB's own types, which pandas cannot write as JSON, arrive as text."""
    server, _ = served
    sql = "SELECT {'a': [1]} AS s, '\\xFF'::BLOB AS raw, INTERVAL 1 DAY AS i, union_value(k := 7) AS u, 1::VARINT AS v"
    response = httpx.post(f"{server.url}/api/v1/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    (row,) = response.json()
    assert (row["s"], row["raw"], row["u"]) == ({"a": [1]}, "ff", "7")
    assert "days=1" in row["i"] and isinstance(row["v"], str)


def test_labels_past_64_bits_or_of_a_type_earlier_labels_rule_out_are_a_422(served: tuple[Server, Client]) -> None:
    server, _ = served
    url = f"{server.url}/api/v1/pipelines/p/ground_truth"
    _refused(httpx.post(url, json={"rows": [{"request_id": "r1", "grade": 2**70}]}), 422, "rows", "too large")
    assert httpx.post(url, json={"rows": [{"request_id": "r1", "grade": 3}]}).status_code == 200
    refused = _refused(httpx.post(url, json={"rows": [{"request_id": "r2", "grade": {"a": 1}}]}), 422, "'grade'")
    assert refused["detail"] == {"field": "grade"}
    assert httpx.post(f"{server.url}/api/v1/query", json={"sql": "SELECT grade FROM ground_truth"}).json() == [
        {"grade": 3}
    ]


def test_the_frameworks_own_refusals_have_our_shape(served: tuple[Server, Client]) -> None:
    """A route that does not exist, a method it does not take, JSON nested past Python's parser: the same
    `{"error", "detail"}` body as every other refusal, and a deep body is said to be one (it was 'an error')."""
    server, _ = served
    deep = b"[" * 20_000 + b"]" * 20_000  # within the body limit the fixture sets (64 KiB)
    refused = httpx.post(f"{server.url}/api/v1/query", content=deep, headers={"content-type": "application/json"})
    assert _refused(refused, 400, "body: JSON nested too deeply")["detail"] is None
    _refused(httpx.get(f"{server.url}/api/v1/nowhere"), 404, "Not Found")
    wrong = httpx.delete(f"{server.url}/api/v1/query")
    assert _refused(wrong, 405, "Method Not Allowed") and wrong.headers["allow"] == "POST"


def test_records_with_gaps_or_booleans_for_floats_are_refused_naming_row_and_column(
    served: tuple[Server, Client],
) -> None:
    server, _ = served
    url = f"{server.url}/pipelines/p/infer"
    full = {"amount": 0.5, "age": 1.0, "v1": 2.0}
    missing = [full, {"amount": 0.1, "v1": 2.0}]
    _refused(httpx.post(url, json=missing), 422, "row 1, column 'age'", "missing or null")
    null = [full, full, {"amount": None, "age": 1.0, "v1": 2.0}]
    _refused(httpx.post(url, json=null), 422, "row 2, column 'amount'", "missing or null")
    boolean = [{"amount": True, "age": 1.0, "v1": 2.0}]
    _refused(httpx.post(url, json=boolean), 422, "column 'amount'", "expected float64, got bool")
    assert httpx.post(url, json=[full]).status_code == 200


def test_upload_options_that_are_not_what_they_claim_are_a_422_naming_the_option(
    served: tuple[Server, Client],
) -> None:
    server, _ = served
    model = io.BytesIO(b"not a model at all")
    for field, value, words in [
        ("tags", "[1,2]", ("tags: expected an object",)),
        ("tags", '{"team": {"nested": 1}}', ("tags.team: expected text",)),
        ("schema", '{"inputs": 5}', ("schema.inputs",)),
        ("schema", "[]", ("schema: expected an object",)),
        ("tags", "{not json", ("tags: not valid JSON",)),
    ]:
        response = httpx.post(
            f"{server.url}/api/v1/models/other",
            data={field: value},
            files={"file": ("model.onnx", model.getvalue())},
            timeout=60,  # the first upload imports the converters; a loaded machine takes seconds
        )
        _refused(response, 422, *words)
    assert httpx.get(f"{server.url}/api/v1/models/other").status_code == 404  # nothing was registered


def test_an_unreadable_upload_names_the_file_not_the_servers_scratch_folder(served: tuple[Server, Client]) -> None:
    server, _ = served
    response = httpx.post(
        f"{server.url}/api/v1/models/junk", files={"file": ("model.pkl", b"\x80\x04garbage")}, timeout=60
    )  # checked in a child process
    assert 400 <= response.status_code < 500, response.text
    assert "model.pkl" in response.json()["error"] and "/tmp" not in response.text


@pytest.mark.parametrize("name", ["bad\x00name", "tab\x07bell", "new\x1bline"])
def test_names_with_control_characters_are_refused(served: tuple[Server, Client], name: str) -> None:
    _, client = served
    with pytest.raises(Exception, match="invalid model name") as raised:
        client.upload_model(name, LogisticRegression().fit(X, y), sample=X.head(5))
    assert getattr(raised.value, "status_code", 0) == 400


def test_a_check_on_an_output_no_model_has_is_refused_when_the_version_is_made(served: tuple[Server, Client]) -> None:
    server, _ = served
    check = {"kind": "check", "name": "hi", "expression": "out.nope > 1"}
    spec = {"name": "checked", "steps": [{"model": "m:1"}, check]}
    _refused(httpx.post(f"{server.url}/api/v1/pipelines", json=spec), 400, "check 'hi'", "nope")
    assert httpx.get(f"{server.url}/api/v1/pipelines/checked").status_code == 404


def test_ground_truth_keyed_on_a_column_the_log_lacks_is_refused(served: tuple[Server, Client]) -> None:
    server, _ = served
    body = {"key": "txn", "rows": [{"txn": "a", "label": 1}]}
    _refused(httpx.post(f"{server.url}/api/v1/pipelines/p/ground_truth", json=body), 422, "key:", "txn", "amount")


def test_the_body_limit_covers_every_route(served: tuple[Server, Client]) -> None:
    server, _ = served
    big = json.dumps({"sql": "SELECT 1 " + " " * (128 * 1024)})
    _refused(httpx.post(f"{server.url}/api/v1/query", content=big), 413, "exceeds the limit")
    upload = httpx.post(f"{server.url}/api/v1/models/huge", files={"file": ("model.onnx", b"x" * (128 * 1024))})
    _refused(upload, 413, "exceeds the limit")
    assert httpx.post(f"{server.url}/api/v1/query", json={"sql": "SELECT 1 AS one"}).json() == [{"one": 1}]


def test_the_sql_surface_reads_no_file(served: tuple[Server, Client]) -> None:
    server, _ = served
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT * FROM glob('/*')"):
        _refused(httpx.post(f"{server.url}/api/v1/query", json={"sql": sql}), 400, "sql:")


def test_422_bodies_match_the_documented_schema(served: tuple[Server, Client]) -> None:
    server, _ = served
    document = httpx.get(f"{server.url}/openapi.json").json()
    documented = document["paths"]["/api/v1/query"]["post"]["responses"]["422"]["content"]["application/json"]
    assert documented["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert set(document["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "detail"}
    body = _refused(httpx.post(f"{server.url}/api/v1/query", json={"wrong": 1}), 422, "sql")
    assert set(body) == {"error", "detail"}


MISSPELT = [  # (route, body, the key the answer must name): each was accepted and its setting silently left default
    ("/api/v1/pipelines/p/deploy", {"replica": 2}, "replica"),
    ("/api/v1/pipelines/p/deploy", {"autoscaling": {"max_replica": 4}}, "max_replica"),
    ("/api/v1/pipelines", {"name": "p", "steps": [{"model": "m:1"}], "shadw": []}, "shadw"),
    ("/api/v1/pipelines", {"name": "p", "steps": [{"model": "m:1", "modle": "m:2"}]}, "modle"),
    (
        "/api/v1/assays",
        {"name": "a", "pipeline": "p", "column": "amount", "actions": [{"url": "http://x", "retry": 0}]},
        "retry",
    ),
    ("/api/v1/tokens", {"role": "viewer", "name": "t", "expire": "30d"}, "expire"),
]


@pytest.mark.parametrize(("route", "body", "key"), MISSPELT)
def test_a_misspelt_setting_is_refused_naming_it_and_nothing_changes(
    served: tuple[Server, Client], route: str, body: dict[str, object], key: str
) -> None:
    server, client = served

    def stored() -> list[object]:
        listed = [httpx.get(f"{server.url}/api/v1/{what}").json() for what in ("deployments", "assays", "tokens")]
        return [*listed, client.services.pipelines.list_versions("p")]

    before = stored()
    refused = httpx.post(f"{server.url}{route}", json=body)
    assert refused.status_code in (400, 422), refused.text
    assert key in refused.json()["error"], refused.text
    assert stored() == before


def test_the_sdk_and_yaml_refuse_a_misspelt_deployment_setting_naming_it(served: tuple[Server, Client]) -> None:
    _, client = served
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    with pytest.raises(BadRequestError, match="autoscaling.max_replica"):
        pipeline.deploy(autoscaling={"min_replicas": 1, "max_replica": 4})
    definition = {"name": "p", "steps": [{"model": "m:1"}], "deployment": {"max_batch": 500}}
    with pytest.raises(BadRequestError, match="max_batch"):
        client.apply_pipeline(definition, deploy=True)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/tokens", {"role": "viewer", "expires": "3000000d"}, "expires"),
        ("POST", "/api/v1/tokens", {"role": "viewer", "expires": "infd"}, "expires"),
        (
            "POST",
            "/api/v1/assays",
            {"name": "a", "pipeline": "p", "column": "in_amount", "window": "3000000d", "baseline_values": [0.1, 0.2]},
            "window",
        ),
        ("PUT", "/api/v1/jobs/j/schedule", {"timeout_s": 1e300}, "timeout_s"),
        ("PUT", "/api/v1/jobs/j/schedule", {"deadline_s": 1e300}, "deadline_s"),
    ],
)
def test_durations_past_any_sensible_bound_are_a_4xx_naming_the_field(
    served: tuple[Server, Client], method: str, path: str, body: dict[str, object], field: str
) -> None:
    """`"expires": "3000000d"` and an assay's `"window": "3000000d"` were plain-text 500s; a job's `timeout_s: 1e300`
    was accepted and every run then failed."""
    server, client = served
    client.services.jobs.upload_code("j", "j.py", b"def main(ctx):\n    pass\n")
    response = httpx.request(method, f"{server.url}{path}", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text and "Traceback" not in response.text
    assert client.services.jobs.store.get("j")[0].timeout_s == 3600.0  # nothing changed


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"max_delay_ms": 1e300}, "max_delay_ms"),
        ({"max_batch_size": 10**15}, "max_batch_size"),
        ({"retention_days": 10**12}, "retention_days"),
        ({"autoscaling": {"upscale_delay_s": 1e300}}, "upscale_delay_s"),
    ],
)
def test_a_deployment_setting_past_its_bound_is_a_4xx_naming_it(
    served: tuple[Server, Client], config: dict[str, object], field: str
) -> None:
    server, client = served
    before = client.services.pipelines.deployments()
    response = httpx.post(f"{server.url}/api/v1/pipelines/p/deploy", json=config)
    assert 400 <= response.status_code < 500 and field in response.text, response.text
    assert client.services.pipelines.deployments() == before
