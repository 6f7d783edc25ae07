"""vLLM's ``truncate_prompt_tokens`` on ``/score`` (issue 21 leftovers): accepted where it changes nothing (-1, or
at least the model's max_length), a 400 naming it below that (vlrank never cuts a pair's prompt), through a real
server."""

from __future__ import annotations

import httpx
import pytest

from server_fixtures import AUTH, TEXT_RERANK, exported_models, library, live  # noqa: F401 - fixtures

PAIRS = {"model": TEXT_RERANK, "text_1": "capital of France?", "text_2": ["Paris is the capital.", "Berlin."]}


def _scores(r: httpx.Response) -> list[float]:
    assert r.status_code == 200, r.text
    return [d["score"] for d in r.json()["data"]]


def test_values_that_change_nothing_are_accepted(live, library):
    plain = _scores(httpx.post(live.url + "/score", headers=AUTH, json=PAIRS, timeout=60))
    max_length = library[TEXT_RERANK].max_length
    for value in (-1, max_length, max_length + 1, 2**31 - 1):
        r = httpx.post(live.url + "/score", headers=AUTH, json={**PAIRS, "truncate_prompt_tokens": value}, timeout=60)
        assert _scores(r) == plain, value


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize("value", [0, 1, 16, "max_length - 1"])
def test_a_cut_below_max_length_is_refused_naming_the_field(live, library, path, value):
    max_length = library[TEXT_RERANK].max_length
    value = max_length - 1 if value == "max_length - 1" else value
    r = httpx.post(live.url + path, headers=AUTH, json={**PAIRS, "truncate_prompt_tokens": value}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "truncate_prompt_tokens" and err["code"] == "invalid_value", err
    assert f"truncate_prompt_tokens={value}" in err["message"] and str(max_length) in err["message"], err
    assert "max_tokens_per_doc" in err["message"], err  # what to pass instead


def test_the_model_is_checked_first(live):
    r = httpx.post(live.url + "/score", headers=AUTH, json={**PAIRS, "model": "nope", "truncate_prompt_tokens": 4},
                   timeout=60)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text
