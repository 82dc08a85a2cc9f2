"""Named model sizes, built from a config (random init), so nothing is downloaded.

Each preset is a model family plus the keyword arguments of its transformers config class. Sizes in
the names count parameters without embeddings (the embedded task's vocabulary is ~70 tokens). The
T5 ones follow the d_ff = 4 * d_model, heads * d_kv = d_model shape of the t5 papers; t5-60m and
t5-220m have t5-small's and t5-base's dimensions.

    ray-t2t validate --explain models     # lists them in the `preset` field
"""

# family -> (transformers config class name, encoder-decoder?)
FAMILIES = {
    "t5": ("T5Config", True),
    "bart": ("BartConfig", True),
    "gpt2": ("GPT2Config", False),
    "llama": ("LlamaConfig", False),
}


def _t5(d_model: int, layers: int, heads: int) -> dict:
    return {
        "d_model": d_model,
        "d_kv": d_model // heads,
        "d_ff": 4 * d_model,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "num_heads": heads,
    }


def _gpt2(n_embd: int, n_layer: int, n_head: int, n_positions: int = 512) -> dict:
    return {"n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "n_positions": n_positions}


def _llama(hidden: int, layers: int, heads: int, kv_heads: int, positions: int = 512) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": (8 * hidden // 3 + 15) // 16 * 16,  # SwiGLU's 8/3 ratio, rounded to 16
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": positions,
    }


PRESETS: dict[str, tuple[str, dict]] = {
    # encoder-decoder
    "t5-tiny": ("t5", _t5(32, 1, 2)),  # tests
    "t5-0.5m": ("t5", _t5(96, 2, 4)),
    "t5-1m": ("t5", _t5(96, 4, 4)),  # t5-0.5m's width, twice its depth: its alternate blocks are a t5-0.5m
    "t5-2m": ("t5", _t5(160, 3, 4)),
    "t5-5m": ("t5", _t5(256, 3, 4)),
    "t5-60m": ("t5", _t5(512, 6, 8)),  # t5-small dimensions
    "t5-220m": ("t5", _t5(768, 12, 12)),  # t5-base dimensions
    "bart-tiny": (
        "bart",
        {
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 512,
        },
    ),
    # decoder-only
    "gpt2-tiny": ("gpt2", _gpt2(32, 2, 2)),  # tests
    "gpt2-0.5m": ("gpt2", _gpt2(96, 4, 4)),
    "gpt2-2m": ("gpt2", _gpt2(160, 6, 4)),
    "gpt2-124m": ("gpt2", _gpt2(768, 12, 12, 1024)),  # gpt2 dimensions
    "llama-tiny": ("llama", _llama(32, 2, 2, 1)),  # tests
    "llama-2m": ("llama", _llama(160, 6, 4, 2)),
    "llama-135m": ("llama", _llama(576, 30, 9, 3, 2048)),  # SmolLM-135M dimensions
}
