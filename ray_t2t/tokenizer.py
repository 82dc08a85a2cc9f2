"""Tokenizers: built locally from the training split (and saved with the run), or loaded by name/path.

    tok = PairTokenizer.build(train_sources, train_targets, source_level="char", target_level="word")
    ids = tok.encode_targets(["HH AH L OW"])        # [[h, ah, l, ow, </s>]]
    tok.decode_targets(ids)                         # ['HH AH L OW']
    tok.save(folder); PairTokenizer.load(folder)

Source and target share one id space: T5 ties encoder and decoder embeddings, and a decoder-only
model reads both sides in one sequence. Each side has its own splitting ("level"):

- char: one token per character (whitespace becomes the token '▁');
- word: one token per whitespace-separated word (a CMUdict phoneme is one token);
- byte: one token per UTF-8 byte (fixed 256-symbol vocabulary, never unknown).

On the embedded task, char source + word target gives the shortest sequences (see docs/data.md,
"Tokenizers"): a phoneme like 'AH' is one target token instead of two or three.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

PAD, EOS, UNK, SEP = "<pad>", "</s>", "<unk>", "<sep>"
SPECIALS = (PAD, EOS, UNK, SEP)  # ids 0..3 in a built vocabulary; 0 = pad = T5's decoder start
META_FILE = "pair_tokenizer.json"


def _side(level: str, vocab: dict[str, int] | None = None) -> Tokenizer:
    """A tokenizers.Tokenizer splitting text at `level` over the shared vocabulary."""
    tokenizer = Tokenizer(models.WordLevel(vocab or {UNK: 0}, unk_token=UNK))
    if level == "char":
        tokenizer.normalizer = normalizers.Replace(Regex(r"\s"), "▁")
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tokenizer.decoder = decoders.Sequence([decoders.Fuse(), decoders.Replace("▁", " ")])
    elif level == "word":
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decoding joins with spaces
    elif level == "byte":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                pre_tokenizers.Split(Regex("."), behavior="isolated"),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
    else:
        raise ValueError(f"unknown tokenizer level {level!r}; valid: char, word, byte")
    if vocab is not None:
        tokenizer.add_special_tokens([PAD, EOS, SEP])  # skipped when decoding
    return tokenizer


def _symbols(level: str, texts: Iterable[str], min_frequency: int) -> set[str]:
    if level == "byte":
        return set(pre_tokenizers.ByteLevel.alphabet())
    splitter = _side(level)
    counts: Counter[str] = Counter()
    for text in texts:
        if splitter.normalizer is not None:
            text = splitter.normalizer.normalize_str(text)
        counts.update(piece for piece, _ in splitter.pre_tokenizer.pre_tokenize_str(text))
    return {symbol for symbol, count in counts.items() if count >= min_frequency}


class PairTokenizer:
    """Encodes sources and targets (each ending in end-of-sequence) and decodes targets."""

    def __init__(
        self, source: str, target: str, *, pad_id: int, eos_id: int, sep_id: int, vocab_size: int, meta: dict
    ) -> None:
        self.source, self.target = source, target
        self.pad_id, self.eos_id, self.sep_id = pad_id, eos_id, sep_id
        self.vocab_size = vocab_size
        self.meta = meta  # what save() writes: kind, levels or pretrained name

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        sources: Sequence[str],
        targets: Sequence[str],
        source_level: str = "char",
        target_level: str = "word",
        min_frequency: int = 1,
    ) -> PairTokenizer:
        """Vocabulary from the given (training) texts: specials first, then symbols in sorted order,
        so the same texts always give the same ids."""
        symbols = _symbols(source_level, sources, min_frequency) | _symbols(target_level, targets, min_frequency)
        vocab = {token: i for i, token in enumerate(SPECIALS)}
        for symbol in sorted(symbols - set(SPECIALS)):
            vocab[symbol] = len(vocab)
        meta = {"kind": "built", "source_level": source_level, "target_level": target_level}
        return cls._from_vocab(vocab, meta)

    @classmethod
    def _from_vocab(cls, vocab: dict[str, int], meta: dict) -> PairTokenizer:
        return cls(
            _side(meta["source_level"], vocab),
            _side(meta["target_level"], vocab),
            pad_id=vocab[PAD],
            eos_id=vocab[EOS],
            sep_id=vocab[SEP],
            vocab_size=len(vocab),
            meta=meta | {"vocab": vocab},
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str, trust_remote_code: bool = False) -> PairTokenizer:
        """A Hugging Face tokenizer (hub name or local folder) used for both sides."""
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if hf.eos_token_id is None:
            raise ValueError(f"tokenizer {name_or_path!r} has no end-of-sequence token")
        pad = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id  # GPT-2 has no pad
        sep = next(i for i in (hf.sep_token_id, hf.bos_token_id, hf.eos_token_id) if i is not None)
        meta = {"kind": "pretrained", "name_or_path": name_or_path}
        return cls(hf, hf, pad_id=pad, eos_id=hf.eos_token_id, sep_id=sep, vocab_size=len(hf), meta=meta)

    # ------------------------------------------------------------------ use

    def _encode(self, side: str, texts: Sequence[str]) -> list[list[int]]:
        if self.meta["kind"] == "pretrained":
            encoded = side(list(texts), add_special_tokens=False)["input_ids"]
        else:
            encoded = [e.ids for e in side.encode_batch(list(texts), add_special_tokens=False)]
        return [ids + [self.eos_id] for ids in encoded]

    def encode_sources(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode(self.source, texts)

    def encode_targets(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode(self.target, texts)

    def decode_targets(self, sequences: Iterable[Sequence[int]]) -> list[str]:
        """Text of each sequence up to its first end-of-sequence; pad and separators dropped."""
        cut = []
        for ids in sequences:
            ids = [int(i) for i in ids]
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id)]
            cut.append([i for i in ids if i not in (self.pad_id, self.sep_id)])
        if self.meta["kind"] == "pretrained":
            return [text.strip() for text in self.target.batch_decode(cut, skip_special_tokens=True)]
        return self.target.decode_batch(cut, skip_special_tokens=True)

    # ------------------------------------------------------------------ transformers

    def to_transformers(self, decoder_only: bool) -> Any:
        """This tokenizer as one transformers tokenizer (PreTrainedTokenizerFast) for an exported model:
        `tok(texts)` encodes sources as the model reads them (ids, end-of-sequence, and the separator
        that starts a decoder-only model's answer), `tok.batch_decode(ids, skip_special_tokens=True)`
        gives target text as ray_t2t decodes it."""
        from tokenizers import processors
        from transformers import PreTrainedTokenizerFast

        if self.meta["kind"] == "pretrained":
            backend = Tokenizer.from_str(self.source.backend_tokenizer.to_str())
        else:
            vocab = self.meta["vocab"]
            backend = _side(self.meta["source_level"], vocab)  # sources split as in training
            backend.decoder = _side(self.meta["target_level"], vocab).decoder  # targets joined as ray_t2t does
        name = backend.id_to_token
        ends = [self.eos_id, self.sep_id] if decoder_only else [self.eos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=" ".join(["$A", *(name(i) for i in ends)]),
            special_tokens=sorted({(name(i), i) for i in ends}),
        )
        unk = backend.token_to_id(UNK)
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            pad_token=name(self.pad_id),
            eos_token=name(self.eos_id),
            sep_token=name(self.sep_id),
            unk_token=UNK if unk is not None else None,
            padding_side="left" if decoder_only else "right",  # a decoder-only batch generates after its prompts
            clean_up_tokenization_spaces=False,
        )

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.meta["kind"] == "pretrained":
            self.source.save_pretrained(folder / "hf")  # so a run reloads without the hub
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, folder: str | Path) -> PairTokenizer:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta["kind"] == "pretrained":
            loaded = cls.from_pretrained(str(folder / "hf"))
            loaded.meta = meta
            return loaded
        return cls._from_vocab(meta["vocab"], meta)
