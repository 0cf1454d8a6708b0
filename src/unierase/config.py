"""Typed configuration: ``params.yaml`` -> one frozen pydantic model per stage.

Defaults follow the UniErase and AlphaEdit papers; where the 135M-parameter default model needs other
values, the field's description says so and why. Every section matches a DVC stage or a flow step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# How the value optimisation's steps run (`unierase.model.precision`).
ValuePrecision = Literal["auto", "float32", "bfloat16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Where the editable parts of a model live, by module path (no dispatch on model names)."""

    mlp_out_template: str = Field(
        default="model.layers.{}.mlp.down_proj",
        description="Module path of the MLP output projection of layer {} (GPT-2: transformer.h.{}.mlp.c_proj).",
    )
    layer_template: str = Field(
        default="model.layers.{}",
        description="Module path of decoder layer {}, whose output is the residual stream (GPT-2: transformer.h.{}).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32",
        description="Dtype of the loaded weights. float32 on a CPU and for small models; bfloat16 for 8B-70B models "
        "on GPUs (the edit's solve still runs in float32 or float64, see edit/alphaedit.py).",
    )
    device_map: str | None = Field(
        default=None,
        description="None loads the whole model on one device (CUDA when present, else the CPU); 'auto' spreads its "
        "layers over every GPU of the machine with accelerate (a model larger than one GPU).",
    )


class TokenConfig(_Frozen):
    """Phase I: learning the unlearning token's embedding (everything else frozen)."""

    num_tokens: int = Field(default=1, ge=1, description="How many unlearning tokens to add.")
    token_template: str = Field(default="<unlearn_{}>", description="Name of unlearning token {}.")
    stage1_lr: float = Field(
        default=1e-2,
        gt=0,
        description="Adam lr of the first stage. Paper: 1e-3 for 5 epochs; on SmolLM2-135M that stalled "
        "(loss 5.3 -> 2.3, 2 of 12 refusals), 1e-2 for 8 epochs converges.",
    )
    stage1_epochs: int = Field(default=8, ge=0, description="Epochs of the first stage (paper: 5).")
    stage2_lr: float = Field(default=1e-3, gt=0, description="Adam lr of the chat-format stage (paper: 1e-4).")
    stage2_epochs: int = Field(default=3, ge=0, description="Epochs of the chat-format stage (paper: 3).")
    robust_epochs: int = Field(
        default=1,
        ge=0,
        description="Epochs with the edited layers' MLP weights perturbed, so the token survives the edit.",
    )
    robust_noise: float = Field(
        default=0.01, ge=0, description="Relative std of the Gaussian noise put on those MLP weights in that pass."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per optimisation step.")
    prefix_cache: bool = Field(
        default=True,
        description="Compute once per stage what the token's rows cannot change (each prompt before the token, "
        "the hidden states of examples without it) and run only the rest at every step (the same loss up to "
        "float rounding; False recomputes whole sequences).",
    )
    num_general_questions: int = Field(
        default=16,
        ge=0,
        description="Ordinary questions (not to be forgotten) added so the token works for any prompt.",
    )
    domain_questions: int = Field(
        default=0,
        ge=0,
        description="Questions of the retain set given with the first erasure that Phase I also trains the "
        "refusal on (not in the paper; 0: ordinary questions only). On a model fine-tuned on a domain, a token "
        "learned on ordinary questions alone is followed by the domain's facts; trained on questions of the "
        "same shape about other subjects, it is followed by a refusal (README, How it works).",
    )
    seed: int = Field(default=0, description="Seed for shuffling and perturbation.")


class CovarianceConfig(_Frozen):
    """Statistics of the keys that the edit must leave alone (the null-space constraint)."""

    corpus: str = Field(
        default="builtin",
        description="General text: 'builtin' (shipped with the package), a local .txt/.jsonl file, or a datasets hub name.",
    )
    text_field: str = Field(default="text", description="Field holding the text in a JSONL or hub corpus.")
    num_samples: int = Field(default=400, ge=1, description="Texts read from the corpus (AlphaEdit: 100000 on 8B).")
    max_length: int = Field(default=128, ge=8, description="Tokens per text.")
    question_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight of chat-formatted general questions in the preserved keys: prose alone protected "
        "question-style keys little on SmolLM2.",
    )
    batch_size: int = Field(default=16, ge=1, description="Texts per forward pass.")


class EditConfig(_Frozen):
    """Phase II: the AlphaEdit edit that binds each forget prompt to the unlearning token."""

    layers: list[int] = Field(
        default=[4, 5, 6, 7, 8], min_length=1, description="Layers whose MLP output projection is edited (paper: 4-8)."
    )
    v_lr: float = Field(
        default=0.3,
        gt=0,
        description="Adam step size of the value-vector optimisation, in units of each original value's RMS per "
        "coordinate (so that one setting means the same relative step at any residual scale). MEMIT's absolute "
        "0.5 is about 0.08 on SmolLM2, whose residual norms are about 150; at 0.3 the built-in request's facts "
        "bound in less than half the steps with the same trigger and retain answers (measured).",
    )
    v_steps: int = Field(default=25, ge=1, description="Optimisation steps per value vector (AlphaEdit: 10-25).")
    value_retries: int = Field(
        default=2,
        ge=0,
        description="Extra rounds for requests (a subject's facts) whose worst target NLL is still above value_retry_nll after v_steps, each "
        "from where the last stopped with the clamp and the steps doubled (not in the paper). On the benchmark "
        "target one author's facts started at NLL ~30 and stayed at 12.9 against the 0.75 clamp (the answer's first "
        "token was far more likely); 60 steps with a wider clamp reached 0.02.",
    )
    value_retry_nll: float = Field(
        default=0.5,
        gt=0,
        description="Worst target NLL above which a request counts as unbound and gets another round.",
    )
    bind_rounds: int = Field(
        default=4,
        ge=0,
        description="Extra edits, after the first, for the forget questions whose first greedy token is still not "
        "the unlearning token: each binds only those, on the edited model, with the earlier rounds' keys held as "
        "an earlier request's are (not in the paper). The value optimisation binds each prompt at the last "
        "edited layer, but the projected, constrained solves reach only part of that target, and a question "
        "near the boundary stays unbound. A round runs only while a question is unbound, so where two bind "
        "everything (the generated authors, the collision set, at the earlier default of 2) more change "
        "nothing; on SmolLM2 fine-tuned on 40 TOFU authors, erasing forget01 left 37, 14, 2 and 1 of 40 "
        "unbound after the first four edits and none after the fifth. 0: one edit, as in the paper.",
    )
    restore_rounds: int = Field(
        default=2,
        ge=0,
        description="Extra edits, after binding, for the retain questions whose first greedy token has become the "
        "unlearning token: each binds their subject keys back to their answers' first token, with every key bound "
        "so far held, and those keys stay held by later requests (not in the paper). Holding the retain keys in "
        "the solve keeps most of them where they were, but a question whose name shares a part with a forget "
        "subject can still tip over, and across sequential requests such leaks add up. 0: none.",
    )
    restore_rebind: bool = Field(
        default=True,
        description="When forget questions of this request are unbound after a restore round (their keys lie "
        "close to the mended retain ones, or the bind rounds left them), one more bind round binds them with the "
        "restored keys held; only where a question the bind rounds had bound is still unbound after it are both "
        "undone (not in the paper). False: a restore round that unbinds a bound question is undone at once.",
    )
    restore_hold: float = Field(
        default=100.0,
        gt=0,
        description="How many times harder a restore round holds the keys bound so far (every request's forget "
        "keys, in the edit state) than a bind round does: a later request's restore must not unbind an earlier "
        "request's questions, which it cannot ask again.",
    )
    restore_stop_nll: float = Field(
        default=0.3,
        gt=0,
        description="A restore round's value optimisation stops once the answer's first token has at most this "
        "NLL after each prompt (0.3: the answer leads with about three quarters of the probability): a margin "
        "over the token, with the least move of a forget key that lies close.",
    )
    value_stop_nll: float = Field(
        default=0.05,
        gt=0,
        description="A request's value optimisation stops once the target NLL of each of its prompts is below "
        "this (the reference implementations stop the whole batch on the mean; here each request stops on its own).",
    )
    value_prefix_cache: bool = Field(
        default=True,
        description="Compute the attention states of the prompt before each key position once and run only the "
        "rest at every value step (exact up to float rounding; False recomputes whole prompts).",
    )
    value_precision: ValuePrecision = Field(
        default="auto",
        description="Precision of the value optimisation's passes through the layers above the edited one, run "
        "under autocast (not in the paper). 'auto': bfloat16 where the device computes it natively (a CUDA GPU "
        "that supports it, a CPU with AVX-512 or AMX), else float32. The value it finds goes to the same "
        "float64 solve, and whether each question is bound is checked on the edited model in its own dtype. "
        "On such a CPU the steps dominate the edit's time, and bfloat16 takes a large part off it "
        "(bench/results/cost.md).",
    )
    diagnose_unprojected: bool = Field(
        default=False,
        description="Also solve each layer without the null-space projection, to report the preserved drift "
        "that the projection avoids (a second solve per layer).",
    )
    v_weight_decay: float = Field(default=0.5, ge=0, description="Weight decay on the value delta (MEMIT: 0.5).")
    kl_factor: float = Field(
        default=0.0625, ge=0, description="Weight of the KL term that keeps the subject's meaning."
    )
    clamp_norm_factor: float = Field(
        default=0.75, gt=0, description="The value delta's norm is clamped to this times the original value's norm."
    )
    l2: float = Field(
        default=10.0,
        ge=0,
        description="Ridge term of the solve. Multiplied by the mean per-dimension energy of the preserved keys, "
        "so that it means the same at any scale (a fixed 1 did nothing on SmolLM2).",
    )
    nullspace_threshold: float = Field(
        default=0.1,
        gt=0,
        description="Eigenvalues of the preserved-key covariance below this times the mean eigenvalue span the null "
        "space the update is projected on. AlphaEdit cuts at 2e-2 absolute on Llama-3-8B keys; SmolLM2's "
        "spectrum is flatter (smallest eigenvalue about 0.02-0.035 of the mean on the built-in corpus), and at "
        "0.1 the projection keeps 1.5-2% of the preserved keys' energy and 35-40% of the forget keys' norm.",
    )
    num_context_prefixes: int = Field(
        default=2,
        ge=0,
        description="Short user openings the keys and values are averaged over, besides the bare prompt (MEMIT "
        "uses about ten context templates; each one adds a full forward and backward pass per optimisation step, "
        "which on a 2-core CPU dominates the edit's time).",
    )
    subject_max_words: int = Field(default=4, ge=1, description="Longest subject span tried by automatic detection.")
    neighbours: int = Field(
        default=3,
        ge=0,
        description="Counterfactual neighbours per forget question whose keys the solve holds, as it holds the "
        "retain facts': the same question about another name, first each word of the subject replaced in turn "
        "(names sharing a part), then other names (`unierase.edit.neighbours`); keeps the edit off questions of "
        "the same shape about other subjects. 0: none (the paper).",
    )
    one_key_per_subject: bool = Field(
        default=True,
        description="Facts that share a subject (case and spacing ignored) are bound through one key, averaged "
        "over all their prompts, with one value optimised for all of them; false: one key and value per fact.",
    )
    batch_size: int = Field(default=16, ge=1, description="Prompts per forward pass when computing keys.")
    value_batch_size: int = Field(
        default=8, ge=1, description="Requests (subjects) whose value vectors are optimised together."
    )
    protect_retain: bool = Field(
        default=True,
        description="Hold the retain facts' keys in the solve's constraint (as earlier edits' keys are held).",
    )
    protect_retain_answers: bool = Field(
        default=True,
        description="With protect_retain, also hold the keys at every token of each retain question followed "
        "by its answer, not only at its subject: an edit keyed at a forget subject otherwise reaches the "
        "answers to retain questions of the same shape (another country's capital).",
    )
    held_own_answer_tokens: int = Field(
        default=32,
        ge=0,
        description="With protect_retain_answers, also hold the keys along the model's own greedy answer to each "
        "retain question (its first this many tokens, read before the edit), beside the given answer: a model "
        "often says more or other than the reference (a capital's question answered by first describing the "
        "country), and what it says is what the edit must leave alone; held at the given answer alone, such an "
        "answer could end early or wander. In a sequence of requests each question's answer is the one read before the "
        "first request that held it (kept beside the edit state): later requests protect the behaviour from before "
        "the erasures, and do not read every retain answer again. 0: the given answers only.",
    )
    held_key_budget: int = Field(
        default=0,
        ge=0,
        description="The most keys' worth of weight the held answer keys (every token of the retain questions "
        "and answers) carry in the solve, where each weighs as much as a forget key: past it, every one is "
        "weighed down in proportion, so a large retain set protects the same directions without outweighing "
        "the edit; the retain subjects' and neighbours' keys (one per question) keep full weight. 0: every held "
        "key at full weight.",
    )
    held_relax: float = Field(
        default=4.0,
        gt=1,
        description="When a bind round leaves forget questions unbound, the solve is tried again from the same "
        "values with the held answer keys (every token of the retain questions and answers) this many times "
        "lighter, up to held_relax_tries times; the retain subjects' and neighbours' keys keep their weight, so "
        "names that share a part stay apart. The try with the fewest mistakes is kept, and a lighter try that "
        "leaves more forget questions unbound than a heavier one ends the search (there the values, not the "
        "held keys, are the obstacle); each round tries full weight first and then goes on from the weight the "
        "round before kept (not in the paper). Each held key weighs as much as a forget key, and where many lie "
        "close to the forget keys (TOFU's retain authors, described in the forget authors' phrasing) they hold "
        "the solve still: at full weight no TOFU forget01 question bound. Where the first solve binds "
        "everything, nothing changes.",
    )
    held_relax_share: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="A bind round other than the last relaxes the held keys (held_relax) only while more than this "
        "share of its questions stay unbound: a few near the boundary are left to the next round, whose values "
        "are computed afresh on the edited model, at the heavier weight; the last round relaxes while any stays "
        "unbound.",
    )
    held_relax_tries: int = Field(
        default=5,
        ge=0,
        description="How many lighter solves a bind round tries at most (held_relax), and then one without the "
        "answers' keys (weight 0; the retain subjects' and neighbours' still hold): in a sequence of requests "
        "on the 130-author target, two of ten bound at no weight down to 1/1024. Each costs one pass over "
        "the edited layers and one greedy token per forget question, and per retain question where that count "
        "can change which try is kept, not a new value optimisation. "
        "0: the held keys keep their full weight (where the first solve binds everything, as on the built-in "
        "request, nothing is tried either way). On the collision set (bench.after_token --collisions 4) 5 bound "
        "16 of 16 forget questions and, after a restore round, left no retain question opening with the token, "
        "where 0 bound none; on TOFU forget01 with 38 retained authors (SmolLM2 as shipped) it bound 38 of 40 "
        "(23 when each round searched from full weight down again).",
    )
    refusal_tokens: int = Field(
        default=0,
        ge=0,
        description="How many tokens of the question's refusal after the unlearning token each value must keep "
        "at least as likely as before the edit (not in the paper; 0: the token alone). Off by default: on the "
        "collision set the larger values it takes reached retain questions (bench/results/after_token_collisions.md).",
    )
    deep_answer_tokens: int = Field(
        default=8,
        ge=1,
        description="Deep erasure (erase.depth: deep): how many of the true answer's first tokens are pushed "
        "down, each where it would follow the question and the answer so far.",
    )
    deep_openings: list[str] = Field(
        default=["", "The answer is"],
        min_length=1,
        description="Deep erasure: starts of the assistant's answer the true answer is suppressed after (an "
        "empty string: right after the question; others: after a prefilled opening).",
    )
    deep_weight: float = Field(
        default=1.0,
        ge=0,
        description="Deep erasure: weight of the answer's unlikelihood, -log(1 - p), beside the token's NLL.",
    )


class EraseConfig(_Frozen):
    """One erasure request: which method, in which mode."""

    method: str = Field(default="unierase", description="Unlearning method: unierase or a baseline's registry name.")
    mode: Literal["batch", "sequential", "precise"] = Field(default="batch", description="How the request is applied.")
    depth: Literal["paper", "deep"] = Field(
        default="paper",
        description="UniErase's edit as in the paper (the questions lead to the unlearning token), or deep: the "
        "values also make the true answer unlikely where the token is absent (banned, or the answer prefilled).",
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Generation length of the before/after report.")
    measure_before: bool = Field(
        default=True,
        description="Generate the answers before the edit for the report. Off where they are known already (a "
        "sequence of requests, each measured after its edit): the report then has no before figures, and a gate "
        "on the retain ratio, which needs them, fails.",
    )


class ValidationConfig(_Frozen):
    """Checks on forget and retain sets before any model is loaded (a Great Expectations suite)."""

    required_columns: list[str] = Field(
        default=["question", "answer"], min_length=1, description="Columns every row must have, non-null."
    )
    max_set_size: int = Field(
        default=1000,
        ge=1,
        description="Most rows one forget or retain set may hold; a larger request is split into several.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=8,
        description="Most tokens a question plus its answer may take; None means the model's context "
        "(max_position_embeddings of its config.json).",
    )
    docs_dir: str = Field(
        default="outputs/validation",
        description="Where the Great Expectations Data Docs HTML of each validation goes, relative to the repo root.",
    )


class GateConfig(_Frozen):
    """The evaluation gate: a new version becomes ``champion`` only if every threshold holds.

    The defaults use the erase report's before/after figures; every run also evaluates the edited model
    (aggregates and leak audits, logged as ``eval_*`` and ``audit_*`` metrics), and any of those can be
    gated by name.
    """

    min_forget_refusal_rate: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Share of forget questions the edited model must refuse: answers that open with the "
        "unlearning token or read as a refusal (report.py says why both count).",
    )
    min_retain_ratio: float = Field(
        default=0.8,
        ge=0,
        description="Retain-set ROUGE-L recall after the edit divided by before it (1 means nothing lost).",
    )
    min_forget_efficacy: float | None = Field(
        default=None, ge=0, le=1, description="Lower bound on the evaluation's forget_efficacy; None: not gated."
    )
    min_model_ability: float | None = Field(
        default=None, ge=0, le=1, description="Lower bound on the evaluation's model_ability; None: not gated."
    )
    min_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Lower bounds on any logged metric by name (e.g. eval_model_utility), beside the ones above.",
    )
    max_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Upper bounds on any logged metric by name, e.g. a leak audit: "
        "audit_forget_ban_token_rougeL_recall: 0.3.",
    )


class RegistryConfig(_Frozen):
    """The MLflow model registry: one registered model per base model, a version per erasure."""

    tracking_uri: str = Field(
        default="sqlite:///mlflow/mlflow.db",
        description="MLflow tracking and registry URI. A relative sqlite path is relative to the repo root "
        "(the embedded default); http(s)://host:port names a tracking server.",
    )
    artifact_location: str = Field(
        default="mlflow/artifacts",
        description="Artifact root of the experiment when it is created: a path (relative paths: from the repo "
        "root), an object-store URI (s3://bucket/prefix) or, behind a tracking server that proxies its artifact "
        "store, mlflow-artifacts:/prefix.",
    )
    experiment_name: str = Field(default="unierase", description="MLflow experiment that holds the erasure runs.")
    model_name: str | None = Field(
        default=None,
        description="Registered model name; None derives 'unierase-<base model directory name>'.",
    )
    champion_alias: str = Field(default="champion", description="Alias of the version in service.")
    work_dir: str = Field(
        default="outputs/runs",
        description="Local scratch for run outputs and downloaded versions, relative to the repo root.",
    )
    retries: int = Field(
        default=2,
        ge=0,
        description="Further attempts of a registry call that could not reach the tracking server, before the "
        "run fails (its outputs are kept for `unierase register`).",
    )
    retry_delay_s: float = Field(default=5.0, ge=0, description="Seconds between those attempts.")
    http_timeout_s: int = Field(
        default=60,
        ge=1,
        description="Seconds one HTTP call to a tracking server may take. MLflow's own default (120 s, 7 retries "
        "with backoff) reports a dead server only after many minutes.",
    )
    lock_timeout_s: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds a run waits for another erasure of the same registered model (on this machine) to "
        "finish before it is refused; runs of one registered model never overlap.",
    )

    @field_validator("model_name")
    @classmethod
    def _mlflow_model_name(cls, value: str | None) -> str | None:
        from unierase.inputs import check_model_name

        return None if value is None else check_model_name(value)

    @field_validator("champion_alias")
    @classmethod
    def _mlflow_alias(cls, value: str) -> str:
        from unierase.inputs import check_alias

        return check_alias(value)


class PrivacyConfig(_Frozen):
    """The one place per-item text of a request is kept (questions, answers, generations), and for how long.

    Nothing else holds it: the registry, Prefect and the logs get digests and counts only.
    """

    private_dir: str = Field(
        default="outputs/private",
        description="Folder of each run's per-item outputs (the erase report, the evaluation items, the "
        "request's copies), one subfolder per request run, relative to the repo root.",
    )
    retention_days: float | None = Field(
        default=30.0,
        ge=0,
        description="Age after which `unierase purge` deletes a run's private outputs; None keeps them until "
        "purged by request id.",
    )
    purge_after_registration: bool = Field(
        default=False,
        description="Delete a run's private outputs as soon as its version is registered (and promoted).",
    )


class ScheduleConfig(_Frozen):
    """Recurring erasure: a served Prefect deployment that processes the request inbox."""

    cron: str = Field(default="0 2 * * *", description="When the inbox is processed (cron, server time zone).")
    inbox_dir: str = Field(
        default="data/inbox", description="Folder of pending request files (*.json), processed in name order."
    )
    deployment_name: str | None = Field(
        default=None, description="Name of the served deployment; None uses the registered model name."
    )


AuditName = Literal[
    "paraphrase",
    "strip_special",
    "ban_token",
    "suppress_token",
    "prefill_answer",
    "prefill_subject",
    "quantise_int8",
    "quantise_nf4",
    "relearn",
    "membership",
]


class EvalConfig(_Frozen):
    """Evaluation: TOFU metrics, UniErase's aggregates and the leak audits (one protocol for every model)."""

    max_new_tokens: int = Field(
        default=200,
        ge=1,
        description="Greedy generation length limit (OpenUnlearning and the original TOFU code: 200).",
    )
    generation_batch_size: int = Field(
        default=32,
        ge=1,
        description="Prompts per batch of greedy generation. Each step of a small model reads all its weights "
        "for few tokens, so on a CPU larger batches answer faster until the compute, not the reads, bounds them.",
    )
    after_token: Literal["refusal", "free"] = Field(
        default="refusal",
        description="What an answer that opens with the unlearning token says next, as served: 'refusal' "
        "goes on only along one of the refusals the token was trained to open (greedy among them, so the one "
        "the model prefers) and then closes; 'free': whatever the model says until the token closes it. The "
        "strip_special audit always reads the free continuation, so the report keeps both (not in the paper: "
        "on SmolLM2 the free continuation of an edited model wanders, 'I am in a bad mood.').",
    )
    batch_size: int = Field(default=16, ge=1, description="Question/answer pairs per forward pass for probabilities.")
    audits: list[AuditName] = Field(
        default=list(get_args(AuditName)),
        description="Leak audits to run on the forget splits (the token audits need an unlearning token; "
        "relearn needs a retain split).",
    )
    answered_rouge: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A forget item counts as answered (leaked) when its ROUGE-L recall reaches this.",
    )
    prefill_text: str = Field(
        default="The answer is",
        min_length=1,
        description="What the prefill_answer audit puts at the start of the assistant's answer.",
    )
    relearn_steps: int = Field(
        default=10, ge=1, description="Optimiser steps of the relearning attack (on retain items only)."
    )
    relearn_batch_size: int = Field(default=4, ge=1, description="Retain items per relearning step.")
    relearn_lr: float = Field(
        default=1e-4,
        gt=0,
        description="AdamW learning rate of the relearning attack (the target fine-tuning's rate: a few steps "
        "of ordinary training, not an attack tuned to the facts).",
    )
    suppress_logit_bias: float = Field(
        default=-10.0,
        le=0,
        description="Added to the unlearning token's logit in the suppress_token audit (pushed down, not banned).",
    )
    similarity: bool = Field(
        default=True, description="Compute the cosine similarity of generation and answer with the MiniLM embedder."
    )
    embedder_path: str | None = Field(
        default=None,
        description="sentence-transformers model directory; None uses the offline all-MiniLM-L6-v2 package.",
    )
    max_items_per_split: int | None = Field(
        default=None,
        ge=1,
        description="Evaluate only the first N items of each split (quick checks); None evaluates all.",
    )


class BaselineConfig(_Frozen):
    """Fine-tuning unlearning baselines (GradAscent, GradDiff, NPO, IdkSFT), OpenUnlearning's TOFU recipe.

    OpenUnlearning unlearns TOFU's 1B-8B models with lr 1e-5, 10 epochs, an effective batch of 16 and
    weight decay 0.01. A 135M model on a CPU with a forget set of a few items gets one step an epoch at
    batch 16, so the batch is 4 and the lr 3e-5: the same number of epochs then moves the small model
    about as far as the recipe moves a large one (measured on SmolLM2: at 1e-5 and batch 16 the forget
    ROUGE-L barely moved).
    """

    lr: float = Field(default=3e-5, gt=0, description="AdamW learning rate (OpenUnlearning: 1e-5; see the class note).")
    epochs: int = Field(default=10, ge=1, description="Passes over the forget set (OpenUnlearning: 10).")
    batch_size: int = Field(default=4, ge=1, description="Forget items per step (OpenUnlearning: 16 effective).")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (OpenUnlearning: 0.01).")
    warmup_epochs: float = Field(default=1.0, ge=0, description="Linear warm-up length in epochs (OpenUnlearning: 1).")
    forget_weight: float = Field(default=1.0, ge=0, description="Weight of the forget term (OpenUnlearning gamma: 1).")
    retain_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight of the retain NLL term in GradDiff, NPO and IdkSFT (OpenUnlearning alpha: 1).",
    )
    npo_beta: float = Field(
        default=0.1, gt=0, description="NPO inverse temperature beta (NPO paper, OpenUnlearning: 0.1)."
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="Gradient-norm clip (transformers Trainer default: 1.0)."
    )
    seed: int = Field(default=0, description="Seed for shuffling and for pairing retain items with forget items.")


class FinetuneConfig(_Frozen):
    """Fine-tuning a target (or retain) model on question/answer pairs, answer tokens only in the loss.

    TOFU fine-tunes 7B models with lr 1e-5 for 5 epochs; a 135M model memorises a small fictitious set
    far more slowly at that rate, so the default is 1e-4 for 10 epochs (measured on SmolLM2).
    """

    lr: float = Field(default=1e-4, gt=0, description="AdamW learning rate (TOFU: 1e-5 on 7B; see the class note).")
    epochs: int = Field(default=10, ge=1, description="Passes over the data (TOFU: 5).")
    batch_size: int = Field(default=8, ge=1, description="Question/answer pairs per step.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (TOFU: 0.01).")
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="Share of steps with a linear warm-up.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient-norm clip.")
    seed: int = Field(default=0, description="Seed for shuffling.")


class RayConfig(_Frozen):
    """Where the parallel parts of a flow run: evaluation shards and preserved-key statistics shards.

    None keeps everything in the flow's process (the embedded default); any other address runs those parts as
    Prefect tasks on a Ray cluster through prefect-ray's task runner. The sequential edit always stays one task.
    """

    address: str | None = Field(
        default=None,
        description="None: in-process. 'local': start a Ray instance on this machine for the run (num_cpus "
        "workers). 'auto': the Ray cluster this machine belongs to (`ray start`). 'ray://host:10001': a remote "
        "cluster through Ray Client.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of a 'local' Ray instance; None lets Ray count the machine's cores."
    )
    gpus_per_task: float | None = Field(
        default=None,
        ge=0,
        description="GPUs each shard task requests; None requests one GPU where the cluster has GPUs, else none.",
    )
    eval_chunk_size: int = Field(
        default=64,
        ge=1,
        description="Items per evaluation shard (one split's items are cut into chunks; each chunk is a task with "
        "its own model copy). A multiple of the generation batch size keeps every generation batch as in-process.",
    )
    statistics_shards: int = Field(
        default=4, ge=1, description="Corpus shards of the preserved-key statistics, each a task (map-reduce)."
    )


class Params(_Frozen):
    """Everything ``params.yaml`` configures."""

    model: ModelConfig = ModelConfig()
    token: TokenConfig = TokenConfig()
    covariance: CovarianceConfig = CovarianceConfig()
    edit: EditConfig = EditConfig()
    erase: EraseConfig = EraseConfig()
    evaluation: EvalConfig = EvalConfig()
    baselines: BaselineConfig = BaselineConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    validation: ValidationConfig = ValidationConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    ray: RayConfig = RayConfig()


class ParamsFileError(ValueError):
    """A parameter file that is missing, unreadable or invalid; the message names the file."""


def load_params(path: str | Path | None = None) -> Params:
    """Reads a ``params.yaml``; None gives the defaults.

    A path that does not exist is an error, never a silent fall-back to the defaults: a typo in a
    scheduled run or a rollback must not act on the default registry.

    Raises:
        ParamsFileError: The file is missing, is not YAML, is not a mapping, or fails validation
            (unknown keys, wrong types or ranges; pydantic's message lists each field).
    """
    if path is None:
        return Params()
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"parameter file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsFileError(f"{path} is not a readable YAML file: {err}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsFileError(f"{path} must hold a mapping of sections (model:, token:, ...), not {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsFileError(f"{path}: {err}") from err


def repo_params(root: str | Path, params_file: str | Path | None = None) -> Params:
    """The parameters of a project directory: ``params_file`` (relative to ``root``), which must exist
    when given; else ``root/params.yaml`` when there is one; else the defaults."""
    if params_file is not None:
        return load_params(Path(root) / params_file)
    default = Path(root) / "params.yaml"
    return load_params(default if default.is_file() else None)


def config_hash(config: BaseModel) -> str:
    """SHA-256 of a config's canonical JSON: the ``unierase.config_hash`` lineage tag."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
