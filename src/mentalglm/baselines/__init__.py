"""Baselines scored by the same code as the LLMs: character n-gram TF-IDF + linear model, fine-tuned
transformer encoders, and zero-/few-shot LLMs. Each writes the predictions JSONL convention."""
