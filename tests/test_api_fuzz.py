"""The API as a stranger drives it: generated requests to `infill` and `order_likelihoods` through
gradio_client, against the app served as the Space serves it (app.py `launch`, tiny model).

Every answer is a result of the right shape or an AppError with the app's own message (no traceback, no
exception class, no server path, neither Gradio's "raised an exception" nor the app's catch-all), and
the server still answers a good request afterwards. The cases and checks are bench.fuzz_api's;
derandomized, A3_API_FUZZ_CASES of them (default 60). The full run: `python -m bench.fuzz_api --cases 2000`.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_api import answers_good_requests, check_case, client_for, launched_space, strategies

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = int(os.environ.get("A3_API_FUZZ_CASES", 60))
INFILL, ORDERS = strategies()


@pytest.fixture(scope="module")
def client():
    with launched_space("tiny") as (url, _):
        yield client_for(url)


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=st.one_of(INFILL, ORDERS))
def test_generated_requests_get_a_result_or_the_apps_own_message(client, case):
    check_case(client, *case)


def test_the_server_answers_a_good_request_after_the_fuzz(client):
    answers_good_requests(client)
