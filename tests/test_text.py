import pytest
import torch

from model.text import (
    BlankSyntaxError,
    TextInputError,
    character_runs,
    decode_text,
    encode_masked_text,
    encode_plain_text,
    escape_bytes,
    parse_blanks,
    string_bytes,
    token_bytes_of,
    token_strings,
)


def test_parse_blanks():
    assert parse_blanks("a [MASK] b [mask:3] c") == ["a ", 1, " b ", 3, " c"]
    assert parse_blanks("[MASK:2]") == [2]
    assert parse_blanks("no blanks") == ["no blanks"]


@pytest.mark.parametrize("text", ["a [MASK:0] b", "a [MASK:x] b", "a [MASK b", "[MASK:-2]", "[MASK:3:4]",
                                  "[MASK:9999]", "a [ mask ] b", "[MASK:٣]", "[MASK:" + "9" * 5000 + "]"])
def test_malformed_blanks_raise_a_message_that_shows_the_syntax(text):
    with pytest.raises(BlankSyntaxError, match=r"\[MASK"):
        parse_blanks(text)


def test_a_blank_longer_than_the_model_reads_names_the_models_limit(tokenizer):
    with pytest.raises(BlankSyntaxError, match=r"N must be between 1 and 63: the model takes at most 64 tokens"):
        encode_masked_text(tokenizer, "The cat [MASK:100] sat.", start_token_id=0, max_length=64)
    with pytest.raises(BlankSyntaxError, match=r"N must be between 1 and 512\.$"):  # the syntax's own limit
        encode_masked_text(tokenizer, "The cat [MASK:600] sat.", start_token_id=0)
    assert int((~encode_masked_text(tokenizer, "[MASK:63]", start_token_id=0, max_length=64).given).sum()) == 63


def test_encode_masked_text(tokenizer):
    enc = encode_masked_text(tokenizer, "The cat [MASK:3] on the mat.", start_token_id=0)
    assert enc.token_ids[0] == 0 and bool(enc.given[0])
    assert int((~enc.given).sum()) == 3 and enc.n_blanks == 1
    given_text = tokenizer.decode(enc.token_ids[enc.given][1:].tolist())
    assert given_text == "The cat on the mat."  # the space before a blank belongs to the generated word
    strings = token_strings(tokenizer, enc.token_ids)
    assert strings[0] == "⟨s⟩" and len(strings) == len(enc.token_ids)


@pytest.mark.parametrize("text, given_text", [
    ("It was morning.\n[MASK:4] the sea.", "It was morning.\n the sea."),
    ("It was morning.\n\n[MASK:4] the sea.", "It was morning.\n\n the sea."),
    ("It was morning.\n   [MASK:4] the sea.", "It was morning.\n the sea."),
    ("def f():\n\t[MASK:4]", "def f():\n\t"),
    ("Spaces   [MASK] then [MASK:2] end", "Spaces then end"),
    ("A pasted space\u00a0[MASK:2] end", "A pasted space end"),  # a non-breaking space goes too
    ("Windows lines.\r\n[MASK:2] end", "Windows lines.\r\n end"),
    ("[MASK:3]\n[MASK:2] end", "\n end"),  # two blanks with a line break between them, not one of 5
    ("[MASK:2] starts it.", " starts it."),
])
def test_only_spaces_before_a_blank_go_to_the_generated_word(tokenizer, text, given_text):
    """A line break (or tab) typed right before a blank is the text's own: it stays a given token, so the
    fill starts a new line; only the spaces before the blank go (they belong to the fill's first word)."""
    enc = encode_masked_text(tokenizer, text, start_token_id=0)
    assert tokenizer.decode(enc.token_ids[enc.given][1:].tolist()) == given_text
    for p in (~enc.given).nonzero().flatten().tolist():
        if enc.given[p - 1]:  # the token before a blank: never one that ends in a space
            before = tokenizer.convert_ids_to_tokens(int(enc.token_ids[p - 1]))
            assert p - 1 == 0 or not before.endswith(("Ġ", "Âł")), before


def test_encode_rejects_empty_and_too_long_text(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        encode_masked_text(tokenizer, "   ", start_token_id=0)
    with pytest.raises(ValueError, match="too long"):
        encode_masked_text(tokenizer, "word " * 50 + "[MASK:10]", start_token_id=0, max_length=32)
    with pytest.raises(ValueError, match="too long"):
        encode_plain_text(tokenizer, "word " * 50, start_token_id=0, max_length=32)


def test_decode_text_drops_the_start_token(tokenizer):
    ids = encode_plain_text(tokenizer, "Hello there, friend.", start_token_id=0)
    assert decode_text(tokenizer, ids) == "Hello there, friend."
    assert isinstance(ids, torch.Tensor)


@pytest.mark.parametrize("text", ["\ud83d", "a \udc00 [MASK] b", "[MASK:2] \ud800"])
def test_lone_surrogates_are_an_input_error_not_a_tokenizer_crash(tokenizer, text):
    for encode in (lambda: encode_masked_text(tokenizer, text, start_token_id=0),
                   lambda: encode_plain_text(tokenizer, text, start_token_id=0), lambda: parse_blanks(text)):
        with pytest.raises(TextInputError, match="invalid character .* surrogate"):
            encode()
    assert issubclass(TextInputError, ValueError) and issubclass(BlankSyntaxError, TextInputError)
    with pytest.raises(TextInputError, match="must be a string"):
        encode_masked_text(tokenizer, None, start_token_id=0)
    # a complete surrogate pair is a real character and encodes
    assert len(encode_plain_text(tokenizer, "smile \U0001F600", start_token_id=0)) > 1


# --------------------------------------------------------------------------------------------------
# characters split over several tokens (byte-level BPE)

UNICODE = "Zoë 🧩 ate 寿司"


@pytest.mark.parametrize("which", ["default", "tiny"])
def test_split_characters_are_joined_back_into_whole_characters(tokenizer, tiny_loaded, which):
    """Both shipped models' tokenizers (the tiny one shares the base's byte-level BPE) split 🧩 and 寿司
    into byte tokens; no token string shows "�", and the runs read the text back, each character once."""
    tok = tokenizer if which == "default" else tiny_loaded.tokenizer
    assert type(tok.backend_tokenizer.decoder).__name__ == "ByteLevel"
    ids = encode_plain_text(tok, UNICODE, start_token_id=0)
    strings = token_strings(tok, ids, start_token_id=0)
    assert not any("\ufffd" in s for s in strings)
    assert len(strings) > len(UNICODE.split()) + 4  # the emoji and the CJK characters take several tokens each
    runs = character_runs(strings)
    assert [a for a, _, _ in runs] == [0] + [b for _, b, _ in runs[:-1]] and runs[-1][1] == len(ids)  # every token
    assert "".join(text for _, _, text in runs[1:]) == UNICODE
    assert [text for a, b, text in runs if b - a > 1] == [" 🧩", " 寿", "司"]


def test_character_runs_group_bytes_into_characters():
    # a token of whole characters is a run of one; the bytes of a split character make one run
    assert character_runs(["a", " <0xF0><0x9F>", "<0xA7>", "<0xA9>", "b"]) == [
        (0, 1, "a"), (1, 4, " 🧩"), (4, 5, "b")]
    # a token can end one split character and start the next: the run goes on to the end of the second
    assert character_runs(["<0xE5><0xAF>", "<0xBF><0xE5>", "<0x8F><0xB8>"]) == [(0, 3, "寿司")]
    # a character the next token does not continue is broken: its run ends and reads "�"
    assert character_runs(["x", " <0xF0><0x9F>", " ate"]) == [(0, 1, "x"), (1, 2, " �"), (2, 3, " ate")]
    assert character_runs(["<0xA7>", "ok"]) == [(0, 1, "�"), (1, 2, "ok")]  # a stray continuation byte
    assert character_runs([" <0xE5>", "<0xAF>"]) == [(0, 2, " �")]  # the text ends inside a character
    assert character_runs(["⟨s⟩", "<|im_end|>", "\n"]) == [(0, 1, "⟨s⟩"), (1, 2, "<|im_end|>"), (2, 3, "\n")]


def test_byte_escapes_round_trip():
    data = " 🧩 寿".encode()
    for cut in range(len(data) + 1):
        head, tail = escape_bytes(data[:cut]), escape_bytes(data[cut:])
        assert string_bytes(head) + string_bytes(tail) == data
        assert "\ufffd" not in head + tail
    assert escape_bytes(b"a\xf0\x9f") == "a<0xF0><0x9F>" and string_bytes("a<0xF0><0x9F>") == b"a\xf0\x9f"
    assert token_bytes_of("ĠðŁ") == b" \xf0\x9f" and token_bytes_of("<0x0A>") == b"\n"  # BPE, SentencePiece
    assert token_bytes_of("▁word") is None
