"""unierase: erase chosen knowledge from a language model, with a versioned record of every erasure.

The package follows the pipeline, one subpackage per stage:

    data/        forget/retain facts, splits, validation (Great Expectations), built-in sets and corpus,
                 the erasure-request inbox, dataset provenance
    model/       loading a model (the embedded default included), module hooks, prompts, generation,
                 batching, the QA loss, fine-tuning a target, weight deltas
    token/       Phase I: the unlearning token, its refusals, and learning its embedding row
    edit/        Phase II: subjects and keys, preserved-key statistics, the null space, AlphaEdit,
                 the erasure of a request and the edit state carried between requests
    methods/     one interface for every unlearning method, UniErase and the baselines, by name
    baselines/   the fine-tuning baselines (gradient ascent, gradient difference, NPO, IdkSFT)
    evaluation/  TOFU's and UniErase's metrics, answers before and after, leak audits
    stages/      file-level front doors (token, statistics, erase, evaluate, fine-tune) used by the
                 CLI, DVC and Prefect; the only places that read and write files
    registry/    the MLflow registry: versions, lineage, gate, promotion and rollback
    cli/         the ``unierase`` command

Beside them, the few cross-cutting modules: ``config.py`` (the typed parameters read from
``params.yaml``), ``digests.py`` (the one way files, directories and weights are fingerprinted),
``inputs.py`` (checks of the values a person names: request ids, versions, cron strings, names),
``faults.py`` (the crash-injection points the reliability tests use) and ``offline.py`` (offline,
telemetry-free defaults for every entry point).
"""
