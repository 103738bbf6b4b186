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


LONG_SENTENCE = ("The quick brown fox jumps over the lazy dog. GPT-2's byte-level BPE splits "
                 "\u201ccurly quotes\u201d, na\u00efve caf\u00e9, 12345 and emoji \U0001F916 too!")
# Pinned ids, and checked again below against gpt3-tokenizer's own pure-Python BPE
# (an encoder independent of tiktoken, which glassgpt uses).
LONG_SENTENCE_IDS = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 402, 11571, 12, 17, 338, 18022,
                     12, 5715, 347, 11401, 30778, 564, 250, 22019, 306, 13386, 447, 251, 11, 41492, 40304, 11,
                     17031, 2231, 290, 44805, 12520, 97, 244, 1165, 0]


def test_gpt2_matches_an_independent_pure_python_encoder_on_a_longer_sentence():
    import gpt3_tokenizer

    tok = get_tokenizer("gpt2")
    assert tok.encode(LONG_SENTENCE) == LONG_SENTENCE_IDS
    assert gpt3_tokenizer.encode(LONG_SENTENCE) == LONG_SENTENCE_IDS
    assert tok.decode(LONG_SENTENCE_IDS) == LONG_SENTENCE


def test_gpt2_treats_end_of_text_inside_text_as_ordinary_text():
    tok = get_tokenizer("gpt2")
    ids = tok.encode("a<|endoftext|>b")
    assert tok.eot_token not in ids
    assert tok.decode(ids) == "a<|endoftext|>b"


@given(st.text(min_size=1))
def test_char_tokenizer_round_trips_any_text_it_was_fitted_on(text):
    tok = get_tokenizer("char", text=text)
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode(text) == tok.encode(text) and again.vocab_size == len(set(text))


@given(st.lists(st.text(max_size=40), max_size=5))
def test_tokenizers_survive_json_and_gpt2_batches_match_single_encodes(texts):
    gpt2 = get_tokenizer("gpt2")
    assert gpt2.encode_batch(texts) == [gpt2.encode(t) for t in texts]
    for name in ("byte", "gpt2"):
        tok = tokenizer_from_dict(get_tokenizer(name).to_dict())
        assert all(tok.decode(tok.encode(t)) == t for t in texts)
    assert all(b < 256 for t in texts for b in get_tokenizer("byte").encode(t))
