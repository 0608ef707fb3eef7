"""lab.datasets.encoding: the padded batches every scorer and the trainer build (pad_batch, collate_nlg)."""

from __future__ import annotations

import random

import pytest
import torch

from lab.datasets.encoding import IGNORE_INDEX, EncodedNLG, collate_nlg, pad_batch


def _by_hand(seqs: list[list[int]], pad: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, x in enumerate(seqs):
        cols = slice(0, len(x)) if side == "right" else slice(T - len(x), T)
        ids[b, cols] = torch.tensor(x, dtype=torch.long)
        mask[b, cols] = 1
    return ids, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_batch_puts_every_token_where_a_hand_written_loop_does(side):
    rng = random.Random(0)
    for _ in range(50):
        seqs = [
            [rng.randint(1, 99) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 5))
        ]
        ids, mask = pad_batch(seqs, -7, side=side)
        want_ids, want_mask = _by_hand(seqs, -7, side)
        assert ids.dtype == mask.dtype == torch.long
        assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)


def test_pad_batch_left_ends_every_row_in_the_last_column():
    ids, mask = pad_batch([[1, 2, 3], [4]], 0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_collate_nlg_pads_labels_with_ignore_and_shifts_the_regularizer_mask():
    items = [
        EncodedNLG([5, 6, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 7, 8]),
        EncodedNLG([9, 10], [IGNORE_INDEX, 10]),
    ]
    b = collate_nlg(items, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, -100, -100]]
    # logits at t score label t + 1: row 0 at 1 and 2, row 1 at 0
    assert b["reg_mask"].tolist() == [[False, True, True, False], [True, False, False, False]]


def test_shared_start_counts_the_common_tokens_before_the_first_scored_position():
    from lab.datasets.encoding import shared_start

    common = list(range(1, 11))  # ten tokens every row starts with
    items = [
        EncodedNLG(common + [20, 21, 22], [IGNORE_INDEX] * 11 + [21, 22]),
        EncodedNLG(common + [30, 31], [IGNORE_INDEX] * 11 + [31]),
        EncodedNLG(common + [40, 41, 42, 43], [IGNORE_INDEX] * 12 + [42, 43]),
    ]
    b = collate_nlg(items, pad_id=0)
    assert b["shared_len"] == 10
    # capped at the first scored position: each row needs its own hidden state there
    early = [EncodedNLG(common + [5], [IGNORE_INDEX] * 4 + common[4:] + [5])] * 2
    assert collate_nlg(early, pad_id=0)["shared_len"] == 0  # 3 tokens: under the minimum
    b2 = collate_nlg(early, pad_id=0)
    assert shared_start(b2["input_ids"], b2["attention_mask"], b2["reg_mask"], minimum=2) == 3
    # rows that part early, a single row, and no scored position share nothing
    apart = [EncodedNLG([1, 2, 3, 4], [IGNORE_INDEX, 2, 3, 4]), EncodedNLG([1, 9], [-100, 9])]
    assert collate_nlg(apart, pad_id=0)["shared_len"] == 0
    assert collate_nlg(items[:1], pad_id=0)["shared_len"] == 0
    # a row whose padding starts inside the common part ends it there
    short = [EncodedNLG(common, [IGNORE_INDEX] * 9 + [10]), items[0]]
    assert collate_nlg(short, pad_id=0)["shared_len"] == 8
