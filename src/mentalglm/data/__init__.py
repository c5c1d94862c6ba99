"""Records, loaders for the raw corpora, and the C-IMHI builder.

builder (Example -> instruction records) · teacher (explanations from any backend) · quality (QC rules,
de-duplication) · cache (resumable teacher calls) · card (data card) · review + agreement (expert-review
kit) · export (Alpaca, messages, LLaMA-Factory, HF datasets; stage-1/stage-2 mix).
"""

from .records import DataError, Example

__all__ = ["DataError", "Example"]
