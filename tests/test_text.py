import pytest
import torch

from model.text import BlankSyntaxError, decode_text, encode_masked_text, encode_plain_text, parse_blanks, token_strings


def test_parse_blanks():
    assert parse_blanks("a [MASK] b [mask:3] c") == ["a ", 1, " b ", 3, " c"]
    assert parse_blanks("[MASK:2]") == [2]
    assert parse_blanks("no blanks") == ["no blanks"]


@pytest.mark.parametrize("text", ["a [MASK:0] b", "a [MASK:x] b", "a [MASK b", "[MASK:-2]", "[MASK:3:4]",
                                  "[MASK:9999]", "a [ mask ] b"])
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
