"""Data plumbing: prompts through the chat template, tokenization, label and regularizer masks.

NLG examples are ``{"prompt": str, "response": str}``. The model sees
``prompt_text(prompt) + response_text(response)``; labels are -100 on the prompt and padding.
The regularizer mask marks the positions whose logits are scored, with the same one-token shift
as the cross-entropy: position t is used when label t+1 is a response token.

NLU examples are ``{"text": str, "label": int}`` for a model with a classification head.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100
MIN_SHARED_START = 8  # a shorter common start costs its own pass for little gain


class DataError(ValueError):
    """A dataset that cannot be used: no usable rows, a sequence too long, a bad column."""


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt as the model should see it, ending where the response begins."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return f"{prompt}\n"


def response_text(tokenizer, response: str) -> str:
    """The response followed by the end-of-turn text the model should learn to emit."""
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": response}],
            tokenize=False,
        )
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
        )
        if full.startswith(head):
            return full[len(head) :]
    eos = tokenizer.eos_token or ""
    return f"{response}{eos}"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def response_ids(tokenizer, response: str) -> list[int]:
    """The response's token ids as ``encode_nlg`` scores them, end-of-turn text included."""
    return _ids(tokenizer, response_text(tokenizer, response))


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids, with BOS first when there is no chat template to add one."""
    ids = _ids(tokenizer, prompt_text(tokenizer, prompt))
    bos = tokenizer.bos_token_id
    if bos is not None and not has_chat_template(tokenizer) and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


@dataclass
class EncodedNLG:
    input_ids: list[int]
    labels: list[int]


def encode_nlg(tokenizer, example: dict, seq_len: int) -> EncodedNLG:
    """Tokenize one prompt/response pair; the prompt is cut from the left if too long."""
    p = prompt_ids(tokenizer, example["prompt"])
    r = response_ids(tokenizer, example["response"])
    if not r:
        raise DataError("an example has an empty response")
    if len(r) >= seq_len:
        r = r[: seq_len - 1]
    room = seq_len - len(r)
    if len(p) > room:
        p = p[len(p) - room :]
    return EncodedNLG(input_ids=p + r, labels=[IGNORE_INDEX] * len(p) + r)


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists padded with ``pad_id`` to the longest: (ids, attention_mask), both (B, T)
    long, the mask 1 on the tokens. ``side``: "right" (training, scoring) or "left" (decoding,
    every row ending in the last column)."""
    rows = [torch.tensor(x, dtype=torch.long) for x in seqs]
    ids = pad_sequence(rows, batch_first=True, padding_value=pad_id, padding_side=side)
    mask = pad_sequence([torch.ones_like(x) for x in rows], batch_first=True, padding_side=side)
    return ids, mask


def collate_nlg(items: Sequence[EncodedNLG], pad_id: int) -> dict:
    """Right-pad a batch. Returns input_ids, attention_mask, labels (B, T), reg_mask (B, T) and
    ``shared_len``, the count of leading tokens all rows share (:func:`shared_start`).

    ``reg_mask[b, t]`` is True when ``labels[b, t + 1]`` is a response token: the logits at t
    are the ones scored against label t+1, exactly as in the shifted cross-entropy.
    """
    input_ids, attention = pad_batch([x.input_ids for x in items], pad_id)  # (B, T)
    labels, _ = pad_batch([x.labels for x in items], IGNORE_INDEX)  # (B, T)
    B, T = input_ids.shape
    reg_mask = torch.zeros((B, T), dtype=torch.bool)
    reg_mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # (B, T): logits at t predict label t+1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "reg_mask": reg_mask,
        "shared_len": shared_start(input_ids, attention, reg_mask),
    }


def shared_start(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    reg_mask: torch.Tensor,
    minimum: int = MIN_SHARED_START,
) -> int:
    """How many tokens every row of a right-padded NLG batch starts with (the chat template's
    system turn and an instruction before each review), up to the first scored position; 0
    when that is under ``minimum`` or the batch has one row. :mod:`lab.engine.forward` runs them once
    and repeats their KV cache for every row."""
    B, T = input_ids.shape
    if B < 2 or not reg_mask.any():
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)  # (T,)
    first_scored = int(reg_mask.any(0).nonzero()[0])  # each row needs its own hidden state there
    n = int(same[:first_scored].long().cumprod(0).sum())  # the leading run of shared columns
    return n if n >= minimum else 0


def to_device(batch: dict, device) -> dict:
    """A batch's tensors on ``device``; its counts (``shared_len``) as they are."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def collate_nlu(tokenizer, examples: Sequence[dict], seq_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        [e["text"] for e in examples],
        padding=True,
        truncation=True,
        max_length=seq_len,
        return_tensors="pt",
    )
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"]
    out["labels"] = torch.tensor([int(e["label"]) for e in examples], dtype=torch.long)
    return out


def check_seq_len(seq_len: int, model_max: int | None) -> None:
    if model_max is not None and seq_len > model_max:
        raise DataError(
            f"train.seq_len={seq_len} is over the model's limit of {model_max} positions"
        )


def usable_examples(examples: Sequence[dict], task: str) -> list[dict]:
    """Drop rows without the fields the task needs; raise when none is left."""
    keys = ("prompt", "response") if task == "nlg" else ("text", "label")
    rows = [
        e
        for e in examples
        if all(k in e and e[k] is not None and str(e[k]).strip() != "" for k in keys)
    ]
    if not rows:
        raise DataError(f"the dataset has no usable rows (each needs {' and '.join(keys)})")
    return rows


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """Indices of each step's batch: seeded shuffles, epoch after epoch. Same for every arm."""
    g = torch.Generator().manual_seed(seed)
    perm: list[int] = []
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not perm:
                perm = torch.randperm(n, generator=g).tolist()
            batch.append(perm.pop())
        yield batch


def make_batch(tokenizer, examples: Sequence[dict], task: str, seq_len: int) -> dict:
    if task == "nlg":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return collate_nlg([encode_nlg(tokenizer, e, seq_len) for e in examples], pad)
    return collate_nlu(tokenizer, examples, seq_len)
