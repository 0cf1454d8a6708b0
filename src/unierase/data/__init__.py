"""Data: facts (question/answer records) and their files, evaluation splits, the Great Expectations
validation of forget/retain sets, the built-in sets and corpus, generated authors, the erasure-request
inbox and dataset provenance (DVC and git digests)."""
