"""Phase II of UniErase: the unlearning edit. Subjects and keyed prompts, preserved-key statistics,
the null-space projector, AlphaEdit's closed-form update of ``down_proj``, and the erasure of a
request with the edit state carried between requests."""
