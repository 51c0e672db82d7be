"""Text with blanks -> token ids and a given mask; token ids -> display strings; display strings ->
runs of tokens that hold whole characters.

`[MASK]` is one masked token, `[MASK:N]` is N masked tokens (case-insensitive, 1 <= N <= 512, N in
ASCII digits). Every sequence starts with the start token (model.loading.START_TOKEN), which is always
given: it is the one position every row can attend to.

A byte-level BPE tokenizer (GPT-2, SmolLM2: the default and the tiny model) splits a character outside
its common set into bytes that can land in different tokens: "🧩" is three tokens ("ĠðŁ", "§", "©"),
none of which decodes to a character alone. `token_strings` writes such bytes as "<0xF0>" (the
SentencePiece byte-fallback spelling, which no token of these vocabularies holds literally), so no
"�" is ever shown for a byte that a later token completes; `character_runs` puts the bytes back
together: the tokens of one character form one run, and its text is that character.

Input errors are `TextInputError` (empty, too long, not encodable text) and its subclass
`BlankSyntaxError` (a malformed blank); both are ValueErrors whose message is meant for the user.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from model.layout import Layout

MAX_BLANK = 512
# Anything that starts like a blank: "[MASK" followed by anything up to the next "]" (or the end).
_BLANK_LIKE = re.compile(r"\[\s*mask\b[^\]\[]*\]?", re.IGNORECASE)
_BLANK = re.compile(r"\[mask(?::([0-9]+))?\]", re.IGNORECASE)
# spaces at the end of a piece, any kind (a pasted non-breaking space too), but not a line break or a tab
_SPACES_AT_END = re.compile(r"[^\S\r\n\t\f\v\x1c-\x1e\x85\u2028\u2029]+$")


class TextInputError(ValueError):
    """Text that cannot be encoded: empty, too long for the model, or not valid Unicode."""


class BlankSyntaxError(TextInputError):
    """A malformed blank such as `[MASK:0]`, `[MASK:x]` or an unclosed `[MASK`."""


def check_text(text) -> str:
    """The text itself, if it is a string the tokenizer can take (valid Unicode: no lone surrogates)."""
    if not isinstance(text, str):
        raise TextInputError(f"the text must be a string; got {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TextInputError(
            f"the text holds an invalid character {text[err.start]!r} at position {err.start} (a lone UTF-16 "
            "surrogate, e.g. half of an emoji): remove it or paste the text again.") from None
    return text


@dataclass
class MaskedText:
    token_ids: torch.Tensor  # (L,) long, start token first; open positions hold the placeholder
    given: torch.Tensor  # (L,) bool
    n_blanks: int  # how many [MASK] markers were in the text
    layout: Layout = field(default_factory=Layout)  # a space typed before a blank; a text on one line (model.layout)


def parse_blanks(text: str, max_blank: int = MAX_BLANK, why: str = "") -> list[str | int]:
    """Split text into pieces: strings are given text, ints are blanks of that many tokens (at most `max_blank`
    each; `why` ends the message of a longer one)."""
    check_text(text)
    pieces: list[str | int] = []
    pos = 0
    for match in _BLANK_LIKE.finditer(text):
        blank = _BLANK.fullmatch(match.group(0))
        if blank is None:
            raise BlankSyntaxError(
                f"malformed blank {match.group(0)!r} at character {match.start()}: write [MASK] for one "
                "token or [MASK:N] for N tokens, e.g. [MASK:5], or [MASK:?] for a blank of any length (Run "
                "tries several lengths)."
            )
        digits = blank.group(1)
        n = (int(digits) if len(digits) <= 4 else MAX_BLANK + 1) if digits is not None else 1
        if not 1 <= n <= max_blank:
            raise BlankSyntaxError(f"malformed blank {match.group(0)!r}: N must be between 1 and {max_blank}{why}.")
        if match.start() > pos:
            pieces.append(text[pos : match.start()])
        pieces.append(n)
        pos = match.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


def encode_masked_text(tokenizer, text: str, *, start_token_id: int, placeholder_id: int | None = None,
                       max_length: int | None = None) -> MaskedText:
    """Tokenize text with blanks. Text pieces are tokenized separately, so blanks never split a word."""
    if not check_text(text).strip():
        raise TextInputError("the text is empty: type a text, with [MASK] or [MASK:N] where tokens should be "
                             "generated.")
    if max_length is not None and max_length - 1 < MAX_BLANK:  # a blank longer than the model reads: say so now
        pieces = parse_blanks(text, max(1, max_length - 1),
                              f": the model takes at most {max_length} tokens, the start token included")
    else:
        pieces = parse_blanks(text)
    placeholder = start_token_id if placeholder_id is None else placeholder_id
    ids, given, word_starts, spaced = [start_token_id], [True], [], False
    for i, piece in enumerate(pieces):
        if isinstance(piece, int):
            if spaced:  # the space typed before this blank: its first token begins a word (model.layout)
                word_starts.append(len(ids))
            ids += [placeholder] * piece
            given += [False] * piece
            spaced = False
            continue
        # A space before a blank belongs to the generated word ("Ġword"), not to a lone space token; a line
        # break or a tab before it is the text's own and stays ("morning.\n[MASK:8]" keeps its "Ċ").
        if i + 1 < len(pieces) and isinstance(pieces[i + 1], int):
            stripped = _SPACES_AT_END.sub("", piece)
            spaced, piece = stripped != piece, stripped
        if piece:
            piece_ids = tokenizer(piece, add_special_tokens=False).input_ids
            ids += piece_ids
            given += [True] * len(piece_ids)
    if max_length is not None and len(ids) > max_length:
        raise TextInputError(f"the text is too long: {len(ids)} tokens (with the blanks) but the model takes at most "
                         f"{max_length}. Shorten the text or the blanks.")
    n_blanks = sum(isinstance(p, int) for p in pieces)
    one_line = not any(isinstance(p, str) and ("\n" in p or "\r" in p) for p in pieces)
    return MaskedText(torch.tensor(ids, dtype=torch.long), torch.tensor(given), n_blanks,
                      Layout(tuple(word_starts), one_line))


def encode_plain_text(tokenizer, text: str, *, start_token_id: int, max_length: int | None = None) -> torch.Tensor:
    """Token ids of plain text (no blank syntax), start token first: the chips a user masks by clicking."""
    if not check_text(text).strip():
        raise TextInputError("the text is empty: type a text first.")
    ids = [start_token_id] + tokenizer(text, add_special_tokens=False).input_ids
    if max_length is not None and len(ids) > max_length:
        raise TextInputError(f"the text is too long: {len(ids)} tokens but the model takes at most {max_length}.")
    return torch.tensor(ids, dtype=torch.long)


def token_strings(tokenizer, token_ids, *, start_token_id: int | None = None) -> list[str]:
    """One display string per token; special tokens by name, the start token as ⟨s⟩ (by default a
    special first token is taken to be the start token). Bytes that are not a whole UTF-8 character
    within the token read "<0xNN>" (see `character_runs`)."""
    ids = [int(t) for t in token_ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if start_token_id is None:
        start_token_id = ids[0] if ids and ids[0] in special else None
    start = start_token_id
    return ["⟨s⟩" if t == start else tokenizer.convert_ids_to_tokens(t) if t in special else _token_text(tokenizer, t)
            for t in ids]


_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


def _token_text(tokenizer, token_id: int) -> str:
    """The token's text, with the bytes of a split character escaped as "<0xNN>"."""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        return text
    raw = tokenizer.convert_ids_to_tokens(token_id)
    data = token_bytes_of(raw) if isinstance(raw, str) else None
    return text if data is None else escape_bytes(data)


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, char -> byte (`bytes_to_unicode` inverted): printable Latin-1
    stands for itself, the other 68 bytes map to U+0100..U+0143."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


def token_bytes_of(raw: str) -> bytes | None:
    """The bytes of a vocabulary entry: SentencePiece byte fallback ("<0xF0>") or a byte-level BPE
    token ("ĠðŁ"); None for anything else."""
    match = _BYTE.fullmatch(raw)
    if match:
        return bytes([int(match.group(1), 16)])
    alphabet = _byte_level_alphabet()
    if raw and all(ch in alphabet for ch in raw):
        return bytes(alphabet[ch] for ch in raw)
    return None


def escape_bytes(data: bytes) -> str:
    """UTF-8 bytes as text: whole characters as themselves, any other byte as "<0xNN>"."""
    out, i = [], 0
    while i < len(data):
        try:
            out.append(data[i:].decode("utf-8"))
            break
        except UnicodeDecodeError as err:
            out.append(data[i: i + err.start].decode("utf-8"))
            out.extend(f"<0x{b:02X}>" for b in data[i + err.start: i + err.end])
            i += err.end
    return "".join(out)


def string_bytes(text: str) -> bytes:
    """The bytes a display string stands for: its text as UTF-8, each "<0xNN>" as that byte."""
    parts = _BYTE.split(text)  # text, byte, text, byte, ..., text
    return b"".join(bytes([int(part, 16)]) if i % 2 else part.encode("utf-8") for i, part in enumerate(parts))


def _incomplete_tail(data: bytes) -> bytes:
    """The bytes at the end of `data` that start a character without finishing it."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data, final=False)
    return decoder.getstate()[0]


def character_runs(strings: list[str]) -> list[tuple[int, int, str]]:
    """Split a sequence of token strings (`token_strings`) into runs of whole characters.

    Returns (start, end, text) per run, covering every token in order: a token that holds whole
    characters is a run of one; the tokens whose bytes make up one split character (and any whole
    characters they also hold) form one run, whose text is the decoded characters. A character that
    is never completed (the next token does not continue it) ends its run and reads "�".
    """
    runs: list[tuple[int, int, str]] = []
    start, pending, data = 0, b"", b""
    for i, text in enumerate(strings):
        piece = string_bytes(text)
        if pending and not (piece and 0x80 <= piece[0] <= 0xBF):  # the split character breaks off here
            runs.append((start, i, data.decode("utf-8", "replace")))
            start, data = i, b""
        data += piece
        pending = _incomplete_tail(data)
        if not pending:
            runs.append((start, i + 1, text if i == start and "<0x" not in text else data.decode("utf-8", "replace")))
            start, data = i + 1, b""
    if start < len(strings):
        runs.append((start, len(strings), data.decode("utf-8", "replace")))
    return runs


def decode_text(tokenizer, token_ids) -> str:
    """The text of a sequence without its start token."""
    return tokenizer.decode([int(t) for t in token_ids][1:], skip_special_tokens=True)
