"""Tiny seeded random models (GPT-2, Llama, BERT, Mixtral, GPT-NeoX) with a byte-level tokenizer, built in-process for tests."""
from __future__ import annotations

import torch

TINY = {
    "tiny-gpt2": ("GPT-2", "gpt2"),
    "tiny-llama": ("Llama", "llama"),
    "tiny-bert": ("BERT", "bert"),
    "tiny-mixtral": ("Mixtral MoE", "mixtral"),
    "tiny-neox": ("GPT-NeoX (Pythia layout, parallel residual)", "gpt_neox"),
}
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def byte_tokenizer(add_eos: bool = False):
    """A 259-token byte-level tokenizer (ids 0-2 special, then the 256 bytes); prepends <bos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({ch: i + len(SPECIALS) for i, ch in enumerate(alphabet)})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    single = "<bos> $A <eos>" if add_eos else "<bos> $A"
    tk.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<bos>", 1), ("<eos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_config(name: str):
    from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, MixtralConfig

    v = len(SPECIALS) + 256
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if name == "tiny-gpt2":
        return GPT2Config(vocab_size=v, n_positions=512, n_embd=64, n_layer=2, n_head=4, **ids)
    if name == "tiny-llama":
        return LlamaConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **ids)
    if name == "tiny-bert":
        return BertConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=512, pad_token_id=0)
    if name == "tiny-mixtral":
        return MixtralConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             num_local_experts=4, num_experts_per_tok=2, **ids)
    if name == "tiny-neox":
        return GPTNeoXConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=512, **ids)
    raise KeyError(f"unknown tiny model {name!r}; known: {sorted(TINY)}")


def build_tiny(name: str, seed: int = 0):
    """(module, tokenizer) for a tiny model, deterministic for a given seed; eager attention (patterns visible)."""
    from transformers import AutoModel, AutoModelForCausalLM

    cfg = tiny_config(name)
    cfg._attn_implementation = "eager"
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        cls = AutoModel if name == "tiny-bert" else AutoModelForCausalLM
        module = cls.from_config(cfg)
    return module, byte_tokenizer(add_eos=name == "tiny-bert")
