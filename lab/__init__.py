"""BA-LoRA Lab: fine-tune LoRA, PiSSA and BA-LoRA side by side and measure what they inherit."""

__version__ = "0.1.0"
