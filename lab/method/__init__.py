"""The pure tensor math of BA-LoRA: the three regularizers, the loss contract and the fused head.

- ``regularizers``  consistency, diversity and svd for NLG and NLU, exactly as the paper defines them
- ``losses``        the one place where terms are weighted (lambda x term) and the loss fields
- ``head``          the fused LM-head loss: logits in row chunks, never the whole (B, T, V) at once
"""
