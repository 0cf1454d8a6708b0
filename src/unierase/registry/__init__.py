"""The MLflow model registry of erasures: one registered model per base model, version 1 the base,
each erasure a new version carrying its metrics, delta, digests and lineage tags; promotion through an
evaluation gate, rollback with an audit log, and lineage queries.

Every tag this package writes is namespaced ``unierase.*``; the text of a forget set is never written
to MLflow (only digests of its file).
"""
