"""The model: loading (the embedded default SmolLM2 included), module hooks, prompts, greedy
generation, batching, the QA loss and fine-tuning, and weight deltas (snapshot, diff, apply, revert)."""
