"""Tokenizers: round trips at every level, deterministic vocabularies, save/load, pretrained loading."""

import pytest

from ray_t2t.tokenizer import EOS, PAD, SEP, PairTokenizer

WORDS = ["hello", "world", "naïve", "o'brien", "two words"]
PHONES = ["HH AH L OW", "W ER L D", "N AY IY V", "OW B R AY AH N", "T UW W ER D Z"]


@pytest.mark.parametrize("source_level", ["char", "word", "byte"])
@pytest.mark.parametrize("target_level", ["char", "word", "byte"])
def test_round_trip_at_every_level(source_level, target_level):
    tok = PairTokenizer.build(WORDS, PHONES, source_level, target_level)
    targets = tok.encode_targets(PHONES)
    assert all(ids[-1] == tok.eos_id for ids in targets)
    assert tok.decode_targets(targets) == PHONES
    # a decoded target stops at the first end-of-sequence and ignores padding
    assert tok.decode_targets([targets[0] + [tok.pad_id, 5, 6]]) == [PHONES[0]]
    assert all(ids[-1] == tok.eos_id for ids in tok.encode_sources(WORDS))


def test_lengths_per_level():
    tok = PairTokenizer.build(WORDS, PHONES, "char", "word")
    assert [len(ids) for ids in tok.encode_sources(["hello"])] == [6]  # 5 letters + </s>
    assert [len(ids) for ids in tok.encode_targets(["HH AH L OW"])] == [5]  # 4 phonemes + </s>
    byte_tok = PairTokenizer.build(WORDS, PHONES, "byte", "byte")
    assert len(byte_tok.encode_sources(["naïve"])[0]) == 7  # ï is two UTF-8 bytes


def test_specials_first_and_vocabulary_independent_of_order():
    tok = PairTokenizer.build(WORDS, PHONES)
    shuffled = PairTokenizer.build(WORDS[::-1], PHONES[::-1])
    assert (tok.pad_id, tok.eos_id, tok.sep_id) == (0, 1, 3)
    assert tok.meta["vocab"] == shuffled.meta["vocab"]
    assert list(tok.meta["vocab"])[:4] == [PAD, EOS, "<unk>", SEP]


def test_unknown_symbols_and_min_frequency():
    tok = PairTokenizer.build(WORDS, PHONES, "char", "word")
    assert tok.decode_targets(tok.encode_targets(["HH ZZZ"])) == ["HH <unk>"]
    rare = PairTokenizer.build(WORDS, PHONES, "char", "word", min_frequency=2)
    assert "OW" in rare.meta["vocab"] and "HH" not in rare.meta["vocab"]  # OW appears twice, HH once
    byte_tok = PairTokenizer.build(["a"], ["b"], "byte", "byte")
    assert byte_tok.decode_targets(byte_tok.encode_targets(["日本語 ✓"])) == ["日本語 ✓"]  # bytes never unknown


def test_save_and_load_give_identical_ids(tmp_path):
    tok = PairTokenizer.build(WORDS, PHONES, "char", "word")
    tok.save(tmp_path / "tok")
    loaded = PairTokenizer.load(tmp_path / "tok")
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.encode_sources(WORDS) == tok.encode_sources(WORDS)
    assert loaded.decode_targets(tok.encode_targets(PHONES)) == PHONES


def _local_pretrained_tokenizer(folder, with_pad: bool):
    """A Hugging Face tokenizer written to disk, standing in for a hub download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1, "<pad>": 2} | {w: i + 3 for i, w in enumerate("HH AH L OW W ER D".split())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {"pad_token": "<pad>"} if with_pad else {}
    hf = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", unk_token="<unk>", **extra)
    hf.save_pretrained(folder)
    return vocab


@pytest.mark.parametrize("with_pad", [True, False])
def test_pretrained_tokenizer_from_a_local_path(tmp_path, with_pad):
    vocab = _local_pretrained_tokenizer(tmp_path / "hf_tok", with_pad)
    tok = PairTokenizer.from_pretrained(str(tmp_path / "hf_tok"))
    assert tok.eos_id == vocab["<|endoftext|>"]
    assert tok.pad_id == (vocab["<pad>"] if with_pad else tok.eos_id)  # GPT-2 style: pad = eos
    ids = tok.encode_targets(["HH AH L OW"])
    assert ids == [[vocab[p] for p in "HH AH L OW".split()] + [tok.eos_id]]
    assert tok.decode_targets(ids) == ["HH AH L OW"]
    tok.save(tmp_path / "saved")
    assert PairTokenizer.load(tmp_path / "saved").encode_targets(["W ER L D"]) == tok.encode_targets(["W ER L D"])


@pytest.mark.parametrize("decoder_only", [False, True])
@pytest.mark.parametrize("kind", ["built", "pretrained"])
def test_the_transformers_tokenizer_encodes_and_decodes_as_ray_t2t(tmp_path, kind, decoder_only):
    """What an export holds for AutoTokenizer: sources end in end-of-sequence (and, for a decoder-only
    model, the separator its answer follows), targets decode to ray_t2t's text."""
    from transformers import AutoTokenizer

    if kind == "built":
        tok = PairTokenizer.build(WORDS, PHONES, "char", "word")
        sources, targets = WORDS, PHONES
    else:
        _local_pretrained_tokenizer(tmp_path / "hf_tok", with_pad=False)
        tok = PairTokenizer.from_pretrained(str(tmp_path / "hf_tok"))
        sources = targets = ["HH AH L OW", "W ER L D"]
    tok.to_transformers(decoder_only).save_pretrained(tmp_path / "export")
    hf = AutoTokenizer.from_pretrained(tmp_path / "export")
    ends = [tok.sep_id] if decoder_only else []
    assert hf(list(sources))["input_ids"] == [ids + ends for ids in tok.encode_sources(sources)]
    encoded = tok.encode_targets(targets)
    assert hf.batch_decode(encoded, skip_special_tokens=True) == tok.decode_targets(encoded) == list(targets)
    assert (hf.pad_token_id, hf.eos_token_id) == (tok.pad_id, tok.eos_id)
    assert hf.padding_side == ("left" if decoder_only else "right")
