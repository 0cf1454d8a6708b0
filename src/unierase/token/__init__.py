"""Phase I of UniErase: the unlearning token. Its vocabulary entries, the refusals it stands for, and
learning its embedding row so that a question followed by it continues with a refusal."""
