"""Tiny random models (``tiny-llama``, ``tiny-bert``) built from a config with a byte-level
tokenizer made in code: no files, no network (the tests' models)."""

from __future__ import annotations

import torch

from lab.models.registry import ModelError

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(model_max_length: int = 512):
    """A byte-level tokenizer with ChatML special tokens, built in code (259 + 4 ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=model_max_length,
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build(name: str, task: str, num_labels: int | None, seed: int):
    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if name == "tiny-llama":
        if task != "nlg":
            raise ModelError("tiny-llama is a causal LM: use task nlg (tiny-bert is the NLU one)")
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(cfg), tokenizer
    if task != "nlu":
        raise ModelError("tiny-bert is a classifier: use task nlu (tiny-llama is the NLG one)")
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_labels=num_labels or 2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForSequenceClassification(cfg), tokenizer
