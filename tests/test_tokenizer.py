import pytest
from hypothesis import given, strategies as st

from glassgpt.errors import UsageError
from glassgpt.tokenizer import get_tokenizer, tokenizer_from_dict


def test_gpt2_reference_ids():
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    assert tok.decode([50256]) == "<|endoftext|>"


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tok = get_tokenizer("char", text="hello world")
    assert tok.decode(tok.encode("low hell")) == "low hell"
    assert tokenizer_from_dict(tok.to_dict()).encode("hello") == tok.encode("hello")
    with pytest.raises(UsageError, match="'z'"):
        tok.encode("zoo")


@given(st.text())
def test_byte_and_gpt2_round_trip_any_unicode(text):
    for name in ("byte", "gpt2"):
        tok = get_tokenizer(name)
        assert tok.decode(tok.encode(text)) == text
