"""Tiny seeded random models (GPT-2, Llama, BERT, Mixtral, GPT-NeoX, Qwen-MoE, DeepSeek-V3) with a byte-level
tokenizer, built in-process for tests."""
from __future__ import annotations

import torch

TINY = {
    "tiny-gpt2": ("GPT-2", "gpt2"),
    "tiny-llama": ("Llama", "llama"),
    "tiny-bert": ("BERT", "bert"),
    "tiny-mixtral": ("Mixtral MoE", "mixtral"),
    "tiny-neox": ("GPT-NeoX (Pythia layout, parallel residual)", "gpt_neox"),
}
#: tiny configs built with ``tiny_model`` / ``build_tiny`` but not in ``TINY`` (which every family's architecture
#: tests sweep): DeepSeek-V3's latent attention has no per-head q/k/v sites, which those sweeps require, and the
#: patch sweep's IG-completeness carve-out for discontinuous top-k routing names tiny-mixtral only.
TINY_EXTRA = {
    "tiny-qwen-moe": ("Qwen2-MoE (softmax top-k router, shared expert)", "qwen2_moe"),
    "tiny-deepseek-v3": ("DeepSeek-V3 (MLA, sigmoid group-limited router, shared expert; block 0 dense)",
                         "deepseek_v3"),
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
    if name == "tiny-qwen-moe":
        from transformers import Qwen2MoeConfig

        return Qwen2MoeConfig(vocab_size=v, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                              shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=512, num_experts=8,
                              num_experts_per_tok=2, norm_topk_prob=False, **ids)
    if name == "tiny-deepseek-v3":
        from transformers import DeepseekV3Config

        return DeepseekV3Config(vocab_size=v, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
                                n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                                routed_scaling_factor=2.5, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16,
                                qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, max_position_embeddings=512,
                                **ids)
    raise KeyError(f"unknown tiny model {name!r}; known: {sorted(TINY) + sorted(TINY_EXTRA)}")


def tiny_model(name: str, seed: int = 0):
    """An ``actlab.models.Model`` of any tiny config (``TINY`` and ``TINY_EXTRA``), frozen and in eval mode."""
    from actlab.models.model import Model

    module, tok = build_tiny(name, seed)
    return Model(module.eval().requires_grad_(False), tok, name=name, revision=f"seed{seed}")


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
