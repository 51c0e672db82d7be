"""Nothing to break in: the app served as the Space serves it (app.py `launch`, tiny model).

1. No endpoint takes a model, a file or a URL, and none loads one a visitor typed: paths, URLs and model
   ids sent into every text input of every endpoint (the named API through gradio_client, the page's
   private events the way the browser calls them) get a result or a clear message, never a file's
   content or a traceback; no such file is opened and no such address connected to (an audit hook
   watches the server's process while they are sent); the server answers a good request afterwards.
2. Files are served only from Gradio's cache (the app's exports) and Gradio's own assets: paths that
   climb out, absolute paths and URLs, plain and percent-encoded, through every route that serves files
   are refused (4xx) and no line of /etc/passwd or of the repository's files comes back; URL fetches,
   uploads and oversized bodies are refused before Gradio sees them (app.Guard).
3. Size limits (app.session): text length, blanks per text, custom group ids, the orders JSON (length and
   count), seeds; each checked before any work through the Explorer, and a request built by hand gets the
   very message the page shows.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client.exceptions import AppError

from app import downloads, order_lab
from app.session import (
    MAX_BLANKS,
    MAX_GROUP_IDS_CHARS,
    MAX_ORDERS,
    MAX_ORDERS_JSON_CHARS,
    MAX_REQUEST_BYTES,
    MAX_TEXT_CHARS,
    Explorer,
    InputError,
    Request,
)
from app.ui.api import INTERNAL_ERROR
from bench.fuzz_api import (
    GOOD_INFILL,
    GOOD_ORDERS,
    GRADIO_GENERIC,
    answers_good_requests,
    call_event,
    client_for,
    flag_leaks,
    launched_space,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["/etc/passwd", "../../assets", "http://127.0.0.1:1/x", "owner/model", "file:///etc/passwd",
           "/proc/self/environ", str(ROOT / "README.md")]
FILEDATA = {"path": "/etc/passwd", "url": "http://127.0.0.1:1/x", "meta": {"_type": "gradio.FileData"}}
TEXT_INPUTS = {"textbox", "html"}  # the page's free text: the text boxes, and the token picker's value
CHOICE_INPUTS = {"dropdown", "radio"}  # named choices (a method, an order, a candidate ...)
COMPLETE = GOOD_ORDERS[0]


def secret_lines() -> list[str]:
    """Lines that must never come back: /etc/passwd's, and some of the repository's own files."""
    lines = [line for line in Path("/etc/passwd").read_text().splitlines() if len(line) > 8][:5]
    for name in ("README.md", "app.py", "app/session.py"):
        lines += [line.strip() for line in (ROOT / name).read_text().splitlines() if len(line.strip()) > 30][:4]
    return lines


SECRETS = secret_lines()


def assert_nothing_leaked(body: str, *sent) -> None:
    shown = [line for line in SECRETS if line in body]
    assert not shown, f"file content came back: {shown[:2]}"
    leaks = flag_leaks(body, *sent)
    assert not leaks, f"{leaks} in {body[:400]!r}"


# --------------------------------------------------------------------------------------------------
# the server's process, watched: which files it opens and where it connects while hostile input arrives


class Watch:
    def __init__(self):
        self.on, self.opened, self.connected, self.urls = False, [], [], []
        sys.addaudithook(self)  # (an audit hook cannot be removed: it records only while `on`)

    def __call__(self, event, args):
        if not self.on:
            return
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            self.opened.append(os.fsdecode(args[0]))
        elif event == "socket.connect":
            self.connected.append(args[1])
        elif event == "urllib.Request":
            self.urls.append(args[0])

    def loaded_a_hostile_value(self) -> list[str]:
        """Files opened or addresses connected to that a hostile value named."""
        bad = []
        targets = {os.path.realpath(p) for p in ("/etc/passwd", "/proc/self/environ", ROOT / "README.md")}
        for path in self.opened:
            real = os.path.realpath(path) if path else path
            if real in targets or "owner/model" in path or path.rstrip("/").endswith("../assets"):
                bad.append(path)
        bad += [str(a) for a in self.connected if isinstance(a, tuple) and a[1:2] == (1,)]
        bad += [u for u in self.urls if "127.0.0.1:1/" in str(u)]
        return bad


WATCH = Watch()


@pytest.fixture(scope="module")
def space():
    with launched_space("tiny") as (url, demo):
        yield url, demo


@pytest.fixture(scope="module")
def client(space):
    return client_for(space[0])


def config_of(demo) -> tuple[dict, list[dict]]:
    config = demo.get_config_file()
    return {c["id"]: c for c in config["components"]}, [d for d in config["dependencies"] if d.get("backend_fn")]


def defaults(components: dict, dependency: dict) -> list:
    """What the page would send: each input's value as the page starts (a State is the server's own)."""
    return [None if components[i]["type"] == "state" else components[i].get("props", {}).get("value")
            for i in dependency["inputs"]]


# --------------------------------------------------------------------------------------------------
# 1. no model, file or URL from a visitor


def test_the_api_takes_text_a_method_a_seed_and_orders_and_the_page_takes_no_files(space, client):
    _, demo = space
    api = client.view_api(print_info=False, return_format="dict")
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in api["named_endpoints"].items()}
    assert params == {"/infill": ["text", "mode", "seed"], "/order_likelihoods": ["text", "orders_json"]}
    assert not api["unnamed_endpoints"]
    components, dependencies = config_of(demo)
    inputs = {components[i]["type"] for d in dependencies for i in d["inputs"]}
    # no component that carries a file or a URL in: a download button is only ever an output
    # (the warning line, a markdown, is read as text by the text box's change event: what it shows now)
    assert inputs <= {"textbox", "html", "dropdown", "radio", "slider", "number", "checkbox", "state", "dataset",
                      "api", "stage", "markdown"}, inputs
    assert not {c["type"] for c in components.values()} & {"file", "uploadbutton", "image", "audio", "video",
                                                          "model3d", "imageeditor", "multimodaltextbox"}


def hostile_event_calls(demo) -> list[tuple[str, int, list]]:
    """(event name, fn_index, data) for every private event: each value of HOSTILE (and a FileData-like
    dict) in all its text inputs at once, then in all its choice inputs at once, the rest as the page sends."""
    components, dependencies = config_of(demo)
    calls = []
    for dep in dependencies:
        if dep.get("api_visibility") == "public":
            continue
        kinds = [components[i]["type"] for i in dep["inputs"]]
        for group in (TEXT_INPUTS, CHOICE_INPUTS | {"dataset"}):
            slots = [k for k, kind in enumerate(kinds) if kind in group]
            if not slots:
                continue
            for value in [*HOSTILE[:4], FILEDATA]:
                data = defaults(components, dep)
                for k in slots:
                    data[k] = value if kinds[k] != "html" or isinstance(value, dict) else {**(data[k] or {}),
                                                                                          "text": value}
                calls.append((dep.get("api_name"), dep["id"], data))
    return calls


def test_paths_urls_and_model_ids_in_every_input_are_never_loaded_nor_served(space, client):
    url, demo = space
    outcomes = {}
    WATCH.on = True
    try:
        for value in HOSTILE:
            named = [("/infill", (value, "A3 plan", 0)), ("/infill", (GOOD_INFILL[0], value, 0)),
                     ("/infill", (GOOD_INFILL[0], "A3 plan", value)), ("/order_likelihoods", (value, "")),
                     ("/order_likelihoods", (COMPLETE, value)),
                     ("/order_likelihoods", (COMPLETE, json.dumps([value, {"name": value, "group_ids": value}])))]
            for api_name, args in named:
                try:
                    answer = json.dumps(client.predict(*args, api_name=api_name))
                    outcomes[(api_name, value)] = "answered"
                except AppError as err:
                    answer = str(err)
                    assert GRADIO_GENERIC not in answer and INTERNAL_ERROR not in answer, (api_name, args)
                    outcomes[(api_name, value)] = answer[:50]
                assert_nothing_leaked(answer, *args)

        def send(call):
            name, fn_index, data = call
            return name, data, call_event(url, fn_index, data)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, hostile_event_calls(demo)))
        an_export(url, demo)  # the watch sees the server's threads: the export's own file is seen written
    finally:
        WATCH.on = False
    assert any(path.startswith(str(downloads.export_root())) for path in WATCH.opened)
    unclear = []
    for name, data, answer in answers:
        assert answer["status"] == 200, (name, answer)
        assert_nothing_leaked(answer["raw"], *[json.dumps(d) for d in data])
        if FILEDATA in data:  # Gradio refuses a file it did not receive itself, before the event runs
            assert not answer["success"], name
        elif not answer["success"] and not answer["error"] and name != "load_example":
            unclear.append(name)  # an exception the page did not turn into a message
    # (load_example is Gradio's own gr.Examples event: a value that is no example's index fails inside Gradio)
    assert not unclear, f"events that answered without a message: {sorted(set(unclear))}"
    assert not WATCH.loaded_a_hostile_value(), WATCH.loaded_a_hostile_value()
    assert len(answers) > 100 and outcomes
    answers_good_requests(client)


def test_raw_json_a_client_library_would_not_send_gets_a_clear_message(space):
    """Lone surrogates, NaN and FileData dicts (a file on the server), written into the request by hand."""
    url, demo = space
    _, dependencies = config_of(demo)
    fn = {d["api_name"]: d["id"] for d in dependencies}
    cases = [("infill", ["a \ud83d [MASK]", "A3 plan", 0], "invalid character"),
             ("infill", [GOOD_INFILL[0], "A3 plan", float("nan")], "seed must be a whole number"),
             ("infill", [GOOD_INFILL[0], "A3 plan", float("inf")], "seed must be a whole number"),
             ("order_likelihoods", [COMPLETE, "\ud800"], "not valid JSON"),
             ("on_tokenize", ["x \udfff y"], "invalid character")]
    for api_name, data, message in cases:
        answer = call_event(url, fn[api_name], data)
        text = answer["error"] or " ".join(answer["logs"])
        assert message in (text or ""), (api_name, answer)
        assert_nothing_leaked(answer["raw"], json.dumps(data))
    for api_name, data in (("infill", [FILEDATA, "A3 plan", 0]), ("order_likelihoods", [COMPLETE, FILEDATA])):
        answer = call_event(url, fn[api_name], data)  # Gradio refuses a file it did not receive, before the call
        assert not answer["success"] and answer["output"] is None, answer
        assert_nothing_leaked(answer["raw"], json.dumps(data))


# --------------------------------------------------------------------------------------------------
# 2. files: only Gradio's cache and assets


def raw_get(url: str, path: str) -> tuple[int, str]:
    """GET `path` exactly as written (no client-side normalisation of ../ or of percent-encoding)."""
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def an_export(url: str, demo) -> dict:
    """The trace JSON export of the stage's example: its FileData as the page gets it."""
    _, dependencies = config_of(demo)
    fn = next(d["id"] for d in dependencies if d.get("api_name") == "trace_json")
    answer = call_event(url, fn, [None])
    assert answer["success"], answer
    return answer["output"][0]


ROUTES = ["/gradio_api/file={}", "/gradio_api/file/{}", "/file={}", "/static/{}", "/assets/{}", "/svelte/{}",
          "/gradio_api/proxy={}", "/gradio_api/custom_component/x/client/js/{}"]


def climbing_targets(export_dir: str, port: int) -> list[str]:
    up = "../" * 12
    return ["/etc/passwd", "etc/passwd", up + "etc/passwd", "..%2f" * 12 + "etc%2fpasswd",
            "%2e%2e%2f" * 12 + "etc/passwd", "%2e%2e/" * 12 + "etc/passwd",
            "%252e%252e%252f" * 12 + "etc%252fpasswd", "%2Fetc%2Fpasswd",
            "%252Fetc%252Fpasswd", "//etc/passwd", "\\etc\\passwd", "..\\..\\..\\etc\\passwd", "/etc/passwd%00.json",
            "/proc/self/environ", "%2Fproc%2Fself%2Fenviron", str(ROOT / "README.md"), "README.md", "app.py",
            "app/session.py", "../README.md", up + str(ROOT / "README.md").lstrip("/"), ".gradio/../README.md",
            f"{export_dir}/{up}etc/passwd", f"{export_dir}/" + "%2e%2e%2f" * 12 + "etc/passwd",
            f"{export_dir}/..%2f..%2f..%2f..%2fetc%2fpasswd", f"{export_dir}/../../../../{str(ROOT)[1:]}/README.md",
            "file:///etc/passwd", "file%3A%2F%2F%2Fetc%2Fpasswd", f"http://127.0.0.1:{port}/gradio_api/info",
            "http%3A%2F%2F127.0.0.1%3A1%2Fx", "https://huggingface.co/", "HTTP://127.0.0.1:1/x", "//127.0.0.1:1/x"]


def test_paths_that_climb_out_or_point_elsewhere_are_refused_on_every_file_route(space):
    url, demo = space
    export = an_export(url, demo)
    export_dir = str(Path(export["path"]).parent)
    served = []
    for route in ROUTES:
        for target in climbing_targets(export_dir, urlsplit(url).port):
            status, body = raw_get(url, route.format(target))
            assert_nothing_leaked(body, target)
            if not 400 <= status < 500:
                served.append((route.format(target), status))
    assert not served, served


def test_the_apps_own_export_is_served_from_gradios_cache_and_nothing_beside_it(space):
    url, demo = space
    export = an_export(url, demo)
    cache = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    assert Path(export["path"]).resolve().is_relative_to(cache)
    response = httpx.get(export["url"])
    assert response.status_code == 200 and json.loads(response.text)["steps"]
    # the file the export wrote first (app.downloads: a fresh directory of the process's exports) is not served
    originals = sorted(downloads.export_root().glob("*/a3-*-trace.json"), key=os.path.getmtime)
    assert originals
    status, body = raw_get(url, f"/gradio_api/file={originals[-1]}")
    assert status == 403 and '"steps"' not in body
    assert raw_get(url, f"/gradio_api/file={Path(export['path']).parent}")[0] == 403  # a directory


def test_url_fetches_uploads_oversized_bodies_and_the_source_editor_are_refused(space):
    url, _ = space
    for path in ("/gradio_api/file=https://huggingface.co/robots.txt", "/gradio_api/file/http://example.com/",
                 "/gradio_api/file=%68ttp://127.0.0.1:1/x"):
        status, body = raw_get(url, path)
        assert status == 403 and "serves no URLs" in body, path
    upload = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.txt", b"hello")})
    assert upload.status_code == 403 and "takes no files" in upload.text
    big = b"[" + b" " * (MAX_REQUEST_BYTES + 1) + b"]"
    response = httpx.post(f"{url}/gradio_api/queue/join", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives, refused once past the limit
        for _ in range(MAX_REQUEST_BYTES // 2**20 + 2):
            yield b" " * 2**20

    response = httpx.post(f"{url}/gradio_api/queue/join", content=chunks(),
                          headers={"content-type": "application/json"})
    assert response.status_code in (400, 413)
    for path in ("/gradio_api/vibe-code", "/gradio_api/runs", "/gradio_api/run-history/buckets"):
        status, body = raw_get(url, path)
        assert 400 <= status < 500 and "class Guard" not in body, path
    assert httpx.post(f"{url}/gradio_api/run/infill", json={"data": list(GOOD_INFILL)}).status_code == 404  # queue only


@pytest.mark.browser
def test_the_page_loads_with_nothing_refused_under_the_spaces_settings(space, browser):
    url, _ = space
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    failed = []
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_selector("#stage .a3s")
    page.wait_for_timeout(500)
    page.close()
    assert not failed, failed


# --------------------------------------------------------------------------------------------------
# 3. size limits, checked before any work


@pytest.fixture(scope="module")
def explorer(space):
    return Explorer(space[1].loaded_model)


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def over_limit_texts():
    return {"characters": ("The cat sat. " * (MAX_TEXT_CHARS // 13 + 1) + "[MASK]", "characters (at most 4,000)"),
            "blanks": ("x [MASK]" * (MAX_BLANKS + 1), f"{MAX_BLANKS + 1} [MASK] markers (at most {MAX_BLANKS}")}


@pytest.mark.parametrize("kind", ["characters", "blanks"])
def test_text_limits_are_checked_before_tokenizing_in_every_explorer_method(explorer, monkeypatch, kind):
    import app.session as session

    text, message = over_limit_texts()[kind]
    monkeypatch.setattr(session, "encode_masked_text", lambda *a, **k: pytest.fail("tokenized"))
    monkeypatch.setattr(order_lab, "order_likelihoods", lambda *a, **k: pytest.fail("scored"))
    calls = [lambda: explorer.picker_from_text(text), lambda: explorer.picker_at_length(text, 3),
             lambda: explorer.encode(text), lambda: explorer.decode(Request(text)),
             lambda: explorer.compare(Request(text)), lambda: explorer.infill(text),
             lambda: explorer.best_of_n_cost(text), lambda: order_lab.api(explorer, text, ""),
             lambda: order_lab.compute(explorer, text)]
    for call in calls:
        start = time.perf_counter()
        assert message in refused(call)
        assert time.perf_counter() - start < 0.05


def test_texts_at_the_limits_are_not_refused_for_their_size(explorer):
    at_limit = ("word " * MAX_TEXT_CHARS)[: MAX_TEXT_CHARS - 6] + "[MASK]"
    assert "too long" in refused(explorer.picker_from_text, at_limit) and "tokens" in refused(explorer.encode, at_limit)
    assert "markers" not in refused(explorer.picker_from_text, "x [MASK]" * MAX_BLANKS)
    assert explorer.picker_from_text("The cat [MASK] sat. " * 10)["mask"].count(True) == 10


def test_group_ids_orders_json_and_seed_limits_through_the_explorer(explorer, monkeypatch):
    groups = "0 " * (MAX_GROUP_IDS_CHARS // 2 + 1)
    request = Request(GOOD_INFILL[0], order="custom group ids", custom_groups=groups)
    assert "Custom group ids are too long" in refused(explorer.decode, request)
    assert "Custom group ids are too long" in refused(explorer.compare, request)
    assert "Custom group ids are too long" in refused(order_lab.compute, explorer, COMPLETE, custom_groups=groups)
    monkeypatch.setattr(order_lab, "order_likelihoods", lambda *a, **k: pytest.fail("scored"))
    long_json = json.dumps(["left_to_right"]) + " " * MAX_ORDERS_JSON_CHARS
    assert "orders_json is too long" in refused(order_lab.api, explorer, COMPLETE, long_json)
    many = json.dumps(["left_to_right"] * (MAX_ORDERS + 1))
    assert f"Too many orders: {MAX_ORDERS + 1}" in refused(order_lab.api, explorer, COMPLETE, many)
    assert "nested too deeply" in refused(order_lab.api, explorer, COMPLETE, "[" * 100_000)
    for seed in (2**63, -(2**63) - 1, 1.5, "x", None, True):
        assert "seed must be a whole number" in refused(explorer.infill, GOOD_INFILL[0], "A3 plan", seed)
        assert "seed must be a whole number" in refused(explorer.decode, Request(GOOD_INFILL[0], seed=seed))


def test_a_request_built_by_hand_gets_the_pages_message(space, client, explorer):
    url, demo = space
    _, dependencies = config_of(demo)
    components, _ = config_of(demo)
    fn = {d["api_name"]: d for d in dependencies}
    long_text, _ = over_limit_texts()["characters"]
    many_blanks, _ = over_limit_texts()["blanks"]
    for text in (long_text, many_blanks):
        expected = refused(explorer.picker_from_text, text)
        with pytest.raises(AppError) as err:
            client.predict(text, "A3 plan", 0, api_name="/infill")
        assert str(err.value) == expected
        with pytest.raises(AppError) as err:
            client.predict(text, "", api_name="/order_likelihoods")
        assert str(err.value) == expected
        page = call_event(url, fn["on_tokenize"]["id"], [text])  # the page's own Tokenize
        assert page["success"] and expected in page["logs"]
    for orders in (json.dumps(["left_to_right"]) + " " * MAX_ORDERS_JSON_CHARS,
                   json.dumps(["left_to_right"] * (MAX_ORDERS + 1))):
        expected = refused(order_lab.api, explorer, COMPLETE, orders)
        with pytest.raises(AppError) as err:
            client.predict(COMPLETE, orders, api_name="/order_likelihoods")
        assert str(err.value) == expected
    with pytest.raises(AppError) as err:
        client.predict(GOOD_INFILL[0], "A3 plan", 2**64, api_name="/infill")
    assert str(err.value) == refused(explorer.infill, GOOD_INFILL[0], "A3 plan", 2**64)
    # custom group ids exist only on the page: its Run, sent by hand, says what decode says
    run = fn["on_run"]
    data = defaults(components, run)
    kinds = {components[i].get("props", {}).get("elem_id"): k for k, i in enumerate(run["inputs"])}
    groups = "0 " * (MAX_GROUP_IDS_CHARS // 2 + 1)
    data[kinds["text"]], data[kinds["order"]], data[kinds["custom-groups"]] = GOOD_INFILL[0], "custom group ids", groups
    page = call_event(url, run["id"], data)
    expected = refused(explorer.decode, Request(GOOD_INFILL[0], order="custom group ids", custom_groups=groups))
    assert page["success"] and expected in page["logs"]
    assert not re.search("Traceback|File \"", page["raw"])
    answers_good_requests(client)
