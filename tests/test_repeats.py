"""model.repeats: the decoders' no-repeat rule (Sampler.no_repeat), against hand-made cases and a model that
wants to stutter."""

import pytest
import torch
from conftest import two_span_plan

from model.config import DecodeConfig, Sampler
from model.decoding import collect, decode
from model.loading import tiny_model
from model.plans import make_plan
from model.repeats import FORMS, RepeatGuard, TokenForms, forms_of
from model.rerank import best_of_n, candidates_with

STUTTER = 7  # the token the stuttering model wants everywhere


class _Biased(torch.nn.Module):
    """An LM head that adds a large bonus to one token: every open position wants it."""

    def __init__(self, head: torch.nn.Module, token: int, bonus: float = 30.0):
        super().__init__()
        self.head, self.token, self.bonus = head, token, bonus

    def forward(self, hidden):
        logits = self.head(hidden).clone()
        logits[..., self.token] += self.bonus
        return logits


@pytest.fixture(scope="module")
def stutterer():
    model = tiny_model(101, seed=0)
    model.lm_head = _Biased(model.lm_head, STUTTER)
    return model


def _stutters(tokens: list[int], window: int = 24, n: int = 3, exempt=frozenset()) -> list[str]:
    """Every doubled token and every n-gram twice within `window` of each other (the rule's own terms)."""
    found = [f"{tokens[i]} twice at {i}" for i in range(len(tokens) - 1)
             if tokens[i] == tokens[i + 1] and tokens[i] not in exempt]
    grams = [tuple(tokens[s : s + n]) for s in range(len(tokens) - n + 1)]
    for a in range(len(grams)):
        for b in range(a + 1, min(len(grams), a + window + 1)):
            if grams[a] == grams[b] and not set(grams[a]) <= exempt:
                found.append(f"{grams[a]} at {a} and {b}")
    return found


def test_the_guard_bans_what_hand_made_cases_say():
    guard = RepeatGuard(3, vocab_size=100)
    known = [True] * 8
    tokens = [1, 2, 3, 4, 0, 6, 1, 2]
    known[4] = False
    assert guard.banned(tokens, known, 4) == {4, 6}  # next to 4 and to 6
    tokens, known = [1, 2, 3, 9, 1, 2, 0], [True] * 6 + [False]
    assert guard.banned(tokens, known, 6) == {2, 3}  # "1 2 3" again; 2 would also double the 2 before it
    tokens, known = [5, 1, 2, 3, 8, 8, 1, 0, 3], [True] * 7 + [False, True]
    assert 2 in guard.banned(tokens, known, 7)  # the hole in the middle of "1 _ 3"
    known[8] = False
    assert 2 not in guard.banned(tokens, known, 7)  # "1 2 _": the n-gram is not complete yet
    far = [1, 2, 3] + [50 + i for i in range(30)] + [1, 2, 0]
    far_known = [True] * (len(far) - 1) + [False]
    assert 3 not in RepeatGuard(3, vocab_size=100, window=24).banned(far, far_known, len(far) - 1)
    assert 3 in RepeatGuard(3, vocab_size=100, window=40).banned(far, far_known, len(far) - 1)
    assert 3 in guard.banned(far, far_known, len(far) - 1)  # the default window: 64 tokens, a whole fill
    with pytest.raises(ValueError, match="at least 2"):
        RepeatGuard(1, vocab_size=100)


def test_forms_join_case_and_spaces_and_let_letterless_tokens_stand_twice():
    """Tokens 10 " one", 11 "One", 12 "one" share a form; 20 "," and 21 "2" hold no letter."""
    forms = list(range(30))
    forms[11] = forms[12] = 10
    letterless = [False] * 30
    letterless[20] = letterless[21] = True
    guard = RepeatGuard(3, TokenForms(forms, letterless))
    assert guard.banned([5, 10, 0, 7], [True, True, False, True], 2) >= {10, 11, 12}  # "one One"
    assert guard.banned([5, 10, 20, 0, 7], [True, True, True, False, True], 3) >= {10, 11, 12}  # "one, one"
    assert not guard.banned([5, 10, 20, 0, 7], [True, True, False, False, True], 3) & {10, 11, 12}  # "," not known
    assert 21 not in guard.banned([5, 21, 0, 7], [True, True, False, True], 2)  # "2 2" ("2001" is "2 0 0 1")
    tokens = [10, 4, 6, 8, 12, 4, 0]
    assert 6 in guard.banned(tokens, [True] * 6 + [False], 6)  # "one 4 6" then "one 4 _" in another case
    punct = [20, 20, 20, 8, 20, 20, 0]
    assert 20 not in guard.banned(punct, [True] * 6 + [False], 6)  # ", , ," twice: no letter, let through


def test_a_word_of_several_tokens_may_come_again_and_punctuation_is_not_a_word():
    """Tokens 10 " Thist", 11 "le", 12 "wood" (the last two attach to the word before them), 13 " Grandma",
    14 " said", 15 " no", 16 "No", 20 ",", 22 ".", 23 "\\n\\n"."""
    forms = list(range(30))
    forms[16] = 15  # " no" and "No": one word
    letterless = [False] * 30
    letterless[20] = letterless[22] = letterless[23] = True
    attaches = [False] * 30
    attaches[11] = attaches[12] = attaches[16] = True
    guard = RepeatGuard(3, TokenForms(forms, letterless, attaches))
    name = [13, 10, 11, 12, 14, 13, 10, 11, 0]  # "Grandma Thistlewood said Grandma Thistle_"
    assert 12 not in guard.banned(name, [True] * 8 + [False], 8)  # "wood" continues the word: let it be
    assert 11 not in guard.banned([13, 10, 11, 12, 14, 13, 10, 0], [True] * 7 + [False], 7)
    assert 16 in guard.banned([14, 15, 22, 0, 5], [True, True, True, False, True], 3)  # "said no. No"
    assert 16 in guard.banned([14, 15, 20, 0, 5], [True, True, True, False, True], 3)  # "said no, No"
    assert 16 in guard.banned([14, 15, 22, 23, 0, 5], [True] * 4 + [False, True], 4)  # "no.\\n\\nNo"
    assert 16 in guard.banned([14, 15, 22, 23, 20, 0], [True] * 5 + [False], 5)  # three tokens between
    assert 16 not in guard.banned([14, 15, 22, 23, 20, 20, 0], [True] * 6 + [False], 6)  # four: too far
    assert not guard.banned([5, 0, 10, 11], [True, False, True, True], 1) & {11}  # "le" is not a word of its own
    # "the door. He went to the door, _": the n-gram "door he" + the word after is read past the punctuation
    door = [5, 6, 22, 7, 8, 9, 5, 6, 20, 7, 0]  # 5 " the", 6 " door", 7 " He", 8 " went", 9 " to"
    assert 7 in guard.banned(door[:9] + [0, 8], [True] * 9 + [False, True], 9)  # "the door, _ went": "He"
    assert 8 in guard.banned(door, [True] * 10 + [False], 10)  # "door, He _": "went"
    later = [5, 6, 22, 7, 8, 5, 6, 22, 0, 9]  # "the door. He went the door. _ to"
    assert 7 in guard.banned(later, [True] * 8 + [False, True], 8)
    assert 7 not in guard.banned(later, [True] * 7 + [False, False, True], 8)  # what stands at 7 is not known yet


def test_the_n_grams_are_of_words_as_the_measure_reads_them():
    """A word of several pieces is one word ("Sam|'s", "did|n|’|t"), as model.eval's has_repeat reads it:
    30 " Sam", 31 "'s", 32 " dad", 33 " said", 34 " went", 35 "did", 36 "n", 37 "’", 38 "t", 39 " know",
    40 " what", 41 " don", 42 " I", 22 "."."""
    forms = list(range(50))
    letterless = [False] * 50
    letterless[22] = letterless[37] = True
    attaches = [False] * 50
    attaches[31] = attaches[36] = attaches[38] = True
    apostrophe = [False] * 50
    apostrophe[37] = True
    guard = RepeatGuard(3, TokenForms(forms, letterless, attaches, apostrophe))
    sams = [30, 31, 32, 33, 22, 30, 31, 32, 0]  # "Sam's dad said. Sam's dad _"
    assert 33 in guard.banned(sams, [True] * 8 + [False], 8)  # "sam's dad said" again
    assert 32 not in guard.banned(sams[:7] + [0, 0], [True] * 7 + [False, False], 7)  # "sam's dad": two words
    didnt = [35, 36, 37, 38, 39, 40, 22, 42]  # "didn’t know what. I"
    assert 40 not in guard.banned(didnt + [41, 37, 38, 39, 0], [True] * 12 + [False], 12)  # "don’t know _"
    assert 40 in guard.banned(didnt + [35, 36, 37, 38, 39, 0], [True] * 13 + [False], 13)  # "didn’t know _"
    # i followed by a piece of its own word ("_n’t know what"): i is not a word of one token, let it be
    assert 35 not in guard.banned(didnt + [0, 36, 37, 38, 39, 40], [True] * 8 + [False] + [True] * 5, 8)


def test_punctuation_may_not_come_between_two_of_the_same_word():
    """"years _ years": a full stop or comma at _ would make "years. years"; a word there would not. Tokens 5
    " years", 6 " spent", 20 ",", 22 "."."""
    letterless = [False] * 30
    letterless[20] = letterless[22] = True
    guard = RepeatGuard(3, TokenForms(list(range(30)), letterless))
    banned = guard.banned([6, 5, 0, 5, 6], [True, True, False, True, True], 2)
    assert {20, 22, 5} <= banned and 6 not in banned
    assert 22 in guard.banned([5, 20, 0, 5], [True, True, False, True], 2)  # "years, _ years"
    assert 22 in guard.banned([5, 20, 20, 0, 5], [True, True, True, False, True], 3)  # three between
    assert 22 not in guard.banned([5, 20, 20, 20, 0, 5], [True] * 4 + [False, True], 4)  # four: too far
    assert not guard.banned([5, 0, 6], [True, False, True], 1) & {20, 22}  # two different words


def test_the_rule_records_where_it_overruled_the_model(stutterer):
    """`rule_banned`: exactly the positions whose most likely token (the stutterer's favourite) was banned;
    a token forced for a branch is never counted."""
    from model.branching import BranchTree

    plan = two_span_plan()
    config = DecodeConfig("plan", order="left_to_right", sampler=Sampler(no_repeat=3))
    trace = collect(decode(stutterer, plan, config, keep_cache=True))
    overruled = [p for s in trace.steps for p, t in zip(s.positions, s.tokens, strict=True)
                 if int(s.candidates[p][0][0]) != t]
    assert overruled and overruled == [p for s in trace.steps for p in (s.rule_banned or [])]
    tree = BranchTree(stutterer, trace)
    first = trace.steps[0]
    index = tree.branch(0, position=first.positions[0], token=3)
    assert tree.branches[index].trace.steps[0].tokens == [3] and not tree.branches[index].trace.steps[0].rule_banned
    assert "rule_banned" not in collect(decode(stutterer, plan, DecodeConfig("plan", order="left_to_right"))) \
        .to_dict()["steps"][0]


def test_the_tokenizer_gives_the_forms(tiny_loaded):
    forms = forms_of(tiny_loaded.model)
    tok = tiny_loaded.tokenizer
    ids = [tok(word, add_special_tokens=False).input_ids for word in (" the", "The", "the", " The")]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 4  # four tokens ...
    assert len({forms.form[i[0]] for i in ids}) == 1 and not forms.letterless[ids[0][0]]  # ... one word
    assert all(forms.letterless[i] for i in tok(" , . 7", add_special_tokens=False).input_ids)
    # the measure's words: "Sam's dad" and "didn’t know" hold pieces that join the word before them
    guard = RepeatGuard(3, forms)
    text = tok("Sam's dad said hi. Sam's dad said", add_special_tokens=False).input_ids
    last = len(text) - 1
    assert text[last] in guard.banned(text, [True] * last + [False], last)  # "sam's dad said" again
    dad = text.index(tok(" dad", add_special_tokens=False).input_ids[0], 3)
    assert text[dad] not in guard.banned(text, [j < dad for j in range(len(text))], dad)  # "Sam's dad": 2 words
    text = tok("She didn’t know what to do. I don’t know what", add_special_tokens=False).input_ids
    assert text[-1] not in guard.banned(text, [True] * (len(text) - 1) + [False], len(text) - 1)
    # the start token is not a word: the text's first word (no leading space) is a word of its own
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert forms.letterless[start]
    text = [start] + tok("The rain did not stop. The rain did", add_special_tokens=False).input_ids
    assert text[-1] in guard.banned(text, [True] * (len(text) - 1) + [False], len(text) - 1)


@pytest.mark.parametrize("config", [
    DecodeConfig("plan", order="left_to_right"), DecodeConfig("plan", order="outside_in"),
    DecodeConfig("plan", order="random", group_size=3), DecodeConfig("dynamic", k=1),
    DecodeConfig("dynamic", strategy="entropy", k=2), DecodeConfig("diffusion", k=1),
    DecodeConfig("official_dynamic", k=2), DecodeConfig("one_step_parallel", k=1),
    DecodeConfig("ar_baseline"), DecodeConfig("plan", order="left_to_right", sampler=Sampler(1.0), seed=3),
], ids=lambda c: f"{c.method}-{c.order}-{c.k}-{c.sampler.temperature}")
def test_every_decoder_keeps_a_model_that_wants_to_stutter_from_stuttering(stutterer, config):
    plan = two_span_plan(config.order if config.order != "custom" else "left_to_right", config.group_size)
    plain = collect(decode(stutterer, plan, config, base=stutterer)).final_ids
    assert _stutters(plain), "the stuttering model should stutter without the rule (else this test proves nothing)"
    guarded_config = config.replace(sampler=Sampler(config.sampler.temperature, no_repeat=3))
    trace = collect(decode(stutterer, plan, guarded_config, base=stutterer))
    given = plan.given.tolist()
    assert trace.final_ids[:5] == plan.token_ids[:5].tolist() and all(
        t == o for t, o, g in zip(trace.final_ids, plan.token_ids.tolist(), given, strict=True) if g)
    filled = trace.final_ids
    # the rule cannot undo stutters that the given text holds, nor see past what a decoder knows: look at
    # what each decoded position made; only the AR baseline does not see the text after a position
    problems = [p for p in _stutters(filled) if not _given_only(p, filled, given)]
    if config.method == "ar_baseline":
        problems = [p for p in problems if not _reaches_right_of_blank(p, given)]
    assert not problems
    assert trace.config.sampler.no_repeat == 3 and STUTTER in filled  # the model's favourite still wins where allowed


def _positions(problem: str) -> list[int]:
    return [int(x) for x in problem.replace(",", " ").replace(")", " ").split() if x.isdigit()][-2:]


def _given_only(problem: str, tokens, given) -> bool:
    """A stutter the given text alone holds (the rule does not rewrite the text)."""
    if "twice at" in problem:
        i = int(problem.split()[-1])
        return given[i] and given[i + 1]
    a, b = _positions(problem)
    return all(given[a : a + 3]) and all(given[b : b + 3])


def _reaches_right_of_blank(problem: str, given) -> bool:
    """The AR baseline chooses each token from the text before it only; a stutter with given text to its
    right (it never saw) is not its rule's to prevent."""
    if "twice at" in problem:
        i = int(problem.split()[-1])
        return given[i + 1]
    a, b = _positions(problem)
    return any(given[b : b + 3]) and not all(given[b : b + 3])


def test_letterless_tokens_may_stand_twice(stutterer):
    plan = two_span_plan()
    config = DecodeConfig("plan", order="left_to_right", sampler=Sampler(no_repeat=3))
    letterless = [False] * 101
    letterless[STUTTER] = True  # as if the favourite were a digit
    setattr(stutterer, FORMS, TokenForms(list(range(101)), letterless))
    try:
        fill = collect(decode(stutterer, plan, config)).final_ids[5:11]
    finally:
        delattr(stutterer, FORMS)
    assert fill == [STUTTER] * 6


def test_best_of_n_candidates_with_the_rule_are_the_decodes_alone(stutterer):
    plan = two_span_plan()
    result = best_of_n(stutterer, plan.token_ids, plan.given, candidates=candidates_with(3))
    for cand in result.candidates:
        order = "left_to_right" if cand.config.order == "custom" else cand.config.order
        alone = collect(decode(stutterer, make_plan(plan.token_ids, given=plan.given, order=order), cand.config))
        assert cand.config.sampler.no_repeat == 3 and cand.trace.final_ids == alone.final_ids


def test_cached_and_recomputed_decoding_agree_under_the_rule(stutterer):
    plan = two_span_plan("random", 2)
    config = DecodeConfig("plan", order="random", group_size=2, sampler=Sampler(no_repeat=3))
    cached = collect(decode(stutterer, plan, config))
    recomputed = collect(decode(stutterer, plan, config, cache=False))
    assert cached.final_ids == recomputed.final_ids


def test_the_config_says_the_rule_only_when_it_is_on():
    assert "no_repeat" not in DecodeConfig().to_dict()["sampler"]  # configs and traces written before it read the same
    on = DecodeConfig(sampler=Sampler(no_repeat=3))
    assert on.to_dict()["sampler"]["no_repeat"] == 3 and DecodeConfig.from_dict(on.to_dict()) == on
    for bad in (1, -1, 2.5, True):
        with pytest.raises(ValueError, match="no_repeat"):
            Sampler(no_repeat=bad)
