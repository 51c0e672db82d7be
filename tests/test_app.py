"""The launched app: the named API endpoint through gradio_client, and the wiring."""

import json

import gradio as gr
import pytest
from conftest import launched_app
from gradio_client import Client

TEXT = "The cat sat on the mat and [MASK:4] at the birds in the old tree."


@pytest.fixture(scope="module")
def app_url():
    with launched_app("tiny") as served:
        yield served


def test_infill_endpoint_through_gradio_client(app_url):
    url = app_url[0]
    client = Client(url, verbose=False, analytics_enabled=False)
    assert "/infill" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    filled, trace_json = client.predict(TEXT, "A3 plan", 0, api_name="/infill")
    trace = json.loads(trace_json)
    assert trace["steps"] and trace["final_text"] == filled
    assert filled.startswith("The cat sat on the mat and") and "[MASK" not in filled
    again, _ = client.predict(TEXT, "A3 plan", 0, api_name="/infill")
    assert again == filled  # greedy and seeded: the same answer twice
    assert trace["config"]["sampler"]["no_repeat"] == 3  # the page's no-repeat rule, on as on the page


def test_infill_endpoint_reports_bad_input_as_an_error_message(app_url):
    from gradio_client.exceptions import AppError

    url = app_url[0]
    client = Client(url, verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="Nothing is masked"):
        client.predict("No blanks here.", "A3 plan", 0, api_name="/infill")
    with pytest.raises(AppError, match="Unknown method"):
        client.predict(TEXT, "beam search", 0, api_name="/infill")


def test_model_events_share_one_concurrency_group(app_url):
    _, demo = app_url
    fns = list(demo.fns.values())
    model_fns = [f for f in fns if getattr(f, "concurrency_id", None) == "model"]
    assert len(model_fns) >= 4  # run, compare, infill, order lab
    assert all(f.concurrency_limit == 1 for f in model_fns)
    public = sorted(f.api_name for f in fns if getattr(f, "api_visibility", "public") == "public")
    assert public == ["infill", "order_likelihoods"]


def test_tokenizing_by_button_enter_and_page_load_shares_one_queue(app_url):
    _, demo = app_url
    elem = {i: getattr(b, "elem_id", None) for i, b in demo.blocks.items()}
    by_trigger = {(elem.get(block), event): f for f in demo.fns.values() for block, event in f.targets}
    tokenize = [by_trigger[("tokenize-btn", "click")], by_trigger[("text", "submit")]]
    loads = [f for (block, event), f in by_trigger.items() if event == "load"]
    assert len(loads) == 1 and tokenize[0].fn is tokenize[1].fn
    assert len({f.concurrency_id for f in [*tokenize, *loads]}) == 1
    assert all(f.concurrency_limit == 1 for f in [*tokenize, *loads])
    # the load never clears the warning line: on a busy server it can answer after a visitor's Run warned
    picker, warning = loads[0].fn("The cat sat on the [MASK] mat.")
    assert picker["tokens"] and isinstance(warning, type(gr.skip()))


def test_page_opens_on_a_playing_example_with_math_and_slide_exports(app_url):
    from app.layout import HOW_A3_WORKS, slides_module

    _, demo = app_url
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    stage = blocks["stage"].value  # decoded before any page loads; the page only draws it
    assert not stage["empty"] and stage["autoplay"] and stage["loop"] and len(stage["steps"]) >= 1
    assert stage["headline"].startswith("A3 best of N:") and "AR needs" in stage["headline"]
    assert any(d["left"] == "$" for d in blocks["how"].latex_delimiters) and "$$" in HOW_A3_WORKS
    assert {"export-trace", "compare-table", "compare-plot", "candidates", "tabs"} <= set(blocks)
    if slides_module() is not None:
        assert blocks["export-gif"].visible and blocks["export-player"].visible



def test_header_says_in_one_line_which_model_runs_on_what(app_url):
    _, demo = app_url
    header = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}["header"].value
    line, _, warning = header.partition("\n\n")
    assert ") · tiny random A3 model" in line and "CPU, " in line and "(float32)" in line
    assert "given tokens read left to right" in line
    assert warning.startswith("> ⚠️")  # an untrained model keeps its warning, below the one line


@pytest.mark.slow
def test_header_names_the_default_models_base_weights_by_their_content(default_model):
    import hashlib

    from app import adapter_version, device_note, model_note
    from app.layout import header_markdown
    from app.session import Explorer
    from model.base import gguf_path

    sha = hashlib.sha256(gguf_path().read_bytes()).hexdigest()[:12]  # the installed GGUF, hashed here
    header = header_markdown(Explorer(default_model), device_note(default_model), model_note(default_model))
    assert "\n" not in header  # one line (a trained model has no warning)
    running = f") · A3 adapter {adapter_version()} on SmolLM2-135M-Instruct (4-bit GGUF, unpacked, sha256 {sha})"
    assert running in header
    assert adapter_version().startswith("v")
    assert "· CPU, " in header and "(float32)" in header and "given tokens read left to right" in header


LAB_TEXT = "The cat sat on the mat and looked at the birds in the old tree."


def test_order_likelihoods_endpoint_through_gradio_client(app_url):
    import torch

    from model.decoding import sequence_log_likelihood

    url, demo = app_url
    client = Client(url, verbose=False, analytics_enabled=False)
    assert "/order_likelihoods" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    result = client.predict(LAB_TEXT, "", api_name="/order_likelihoods")
    result = json.loads(result) if isinstance(result, str) else result
    orders = {o["name"]: o for o in result["orders"]}
    assert "left_to_right" in orders and len(orders) >= 4
    loaded = demo.loaded_model
    ids = [loaded.start_token_id] + loaded.tokenizer(LAB_TEXT, add_special_tokens=False).input_ids
    ltr = orders["left_to_right"]
    assert ltr["group_ids"] == list(range(len(ids))) and len(ltr["token_logps"]) == len(ids)
    assert ltr["token_logps"][0] is None and all(isinstance(v, float) for v in ltr["token_logps"][1:])
    for order in result["orders"]:
        reference, _ = sequence_log_likelihood(loaded.model, torch.tensor(ids), order["group_ids"])
        assert order["logp"] == pytest.approx(reference, abs=1e-3)
    custom = [0] + [2] * (len(ids) - 3) + [1, 1]  # the last two tokens first, then the rest at once
    chosen = client.predict(LAB_TEXT, json.dumps(["right_to_left", {"name": "mine", "group_ids": custom}]),
                            api_name="/order_likelihoods")
    chosen = json.loads(chosen) if isinstance(chosen, str) else chosen
    assert [o["name"] for o in chosen["orders"]] == ["right_to_left", "mine"]
    assert chosen["orders"][0]["logp"] == pytest.approx(orders["right_to_left"]["logp"], abs=1e-3)


def test_order_likelihoods_endpoint_reports_bad_input_as_an_error_message(app_url):
    from gradio_client.exceptions import AppError

    client = Client(app_url[0], verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="remove the .MASK. blanks"):
        client.predict(TEXT, "", api_name="/order_likelihoods")
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict(LAB_TEXT, "[left_to_right", api_name="/order_likelihoods")
    with pytest.raises(AppError, match="expected .* integers"):
        client.predict(LAB_TEXT, json.dumps([{"name": "short", "group_ids": [0, 1]}]), api_name="/order_likelihoods")
    with pytest.raises(AppError, match="Unknown order name"):
        client.predict(LAB_TEXT, json.dumps(["sideways"]), api_name="/order_likelihoods")


def test_order_lab_tab_is_wired(app_url):
    _, demo = app_url
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert {"tab-orders", "lab-text", "lab-btn", "lab-plot", "lab-a", "lab-b", "lab-load-a", "lab-tokens",
            "gallery-plot", "gallery-scheme", "gallery-stage", "gallery-use"} <= set(blocks)
    gallery = blocks["gallery-plot"].value  # drawn at build time, without the model
    assert gallery is not None


def test_carry_mask_keeps_the_clicks_outside_the_edit():
    from app.picker import carry_mask

    def chips(ids, mask=None, locked=(0,)):
        return {"text": "", "ids": ids, "tokens": [], "mask": mask or [False] * len(ids), "locked": list(locked)}

    old = chips([0, 10, 11, 12, 13], [False, False, True, False, True])
    # a token typed in front: every click moves with its token
    assert carry_mask(old, chips([0, 9, 10, 11, 12, 13]))["mask"] == [False, False, False, True, False, True]
    # a token changed in the middle: its click goes, the others stay
    assert carry_mask(old, chips([0, 10, 15, 12, 13]))["mask"] == [False, False, False, False, True]
    # another text altogether: a common word elsewhere does not take a click
    assert carry_mask(old, chips([0, 20, 11, 21]))["mask"] == [False] * 4
    # a locked chip (a blank, the start token) keeps the new text's flag whatever was clicked
    blank = chips([0, 10, 11, 12, 99], [False, False, False, False, True], locked=(0, 4))
    assert carry_mask(chips([0, 10, 11, 12, 99], [True, True, False, False, False]), blank)["mask"] == [
        False, True, False, False, True]
    # what the browser sends is not trusted: anything malformed counts as no clicks
    new = chips([0, 10])
    for bad in (None, "x", {"ids": [0, 1], "mask": [True]}, {"ids": ["a", {}], "mask": [True, True]}):
        assert carry_mask(bad, new) == new


def test_a_change_of_order_or_group_ids_clears_the_warning_line(app_url):
    """A warning about the order or the ids ("Order is set to custom group ids: …") must not outlive them."""
    demo = app_url[1]
    block = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    warning, order, ids = block["warning"], block["order"], block["custom-groups"]
    clears = [fn for fn in demo.fns.values() if fn.outputs == [warning] and fn.fn is None and fn.js]
    triggers = {(getattr(target, "_id", target), event) for fn in clears for target, event in fn.targets}
    assert {(order._id, "change"), (ids._id, "change")} <= triggers


def test_the_run_button_hands_its_chips_to_on_ran_outside_the_queue(app_url):
    """What keeps the race away, read off the wiring (a browser test catches it only when the run is slow
    enough): Run writes its chips to a state, never to the picker, and `on_ran`, which runs after it outside
    the queue, reads the text box as it is then."""
    demo = app_url[1]
    by_name = {getattr(fn.fn, "__name__", ""): fn for fn in demo.fns.values()}
    run, ran = by_name["on_run"], by_name["on_ran"]
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "picker")
    text = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "text")
    assert picker not in run.outputs
    assert ran.inputs[0] is text and picker in ran.outputs and not ran.queue
