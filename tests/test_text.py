import pytest
import torch

from model.text import (
    BlankSyntaxError,
    TextInputError,
    decode_text,
    encode_masked_text,
    encode_plain_text,
    parse_blanks,
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


def test_encode_masked_text(tokenizer):
    enc = encode_masked_text(tokenizer, "The cat [MASK:3] on the mat.", start_token_id=0)
    assert enc.token_ids[0] == 0 and bool(enc.given[0])
    assert int((~enc.given).sum()) == 3 and enc.n_blanks == 1
    given_text = tokenizer.decode(enc.token_ids[enc.given][1:].tolist())
    assert given_text == "The cat on the mat."  # the space before a blank belongs to the generated word
    strings = token_strings(tokenizer, enc.token_ids)
    assert strings[0] == "⟨s⟩" and len(strings) == len(enc.token_ids)


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
