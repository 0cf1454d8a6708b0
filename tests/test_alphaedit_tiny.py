"""AlphaEdit mechanics on a tiny model: which tensors move, the solve's algebra, the edit state.

pytest tests/test_alphaedit_tiny.py
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import CovarianceConfig, EditConfig, EraseConfig, Params, TokenConfig
from unierase.data.facts import Fact
from unierase.edit.erasure import erase_facts, opens_with
from unierase.edit.state import accumulate
from unierase.edit.subject import KeyedPrompt
from unierase.model.delta import diff_models, snapshot
from unierase.stages.artifacts import load_state, save_state
from unierase.token.vocabulary import add_unlearning_tokens

PARAMS = Params(
    token=TokenConfig(),
    covariance=CovarianceConfig(),
    edit=EditConfig(
        layers=[1, 2],
        v_steps=3,
        num_context_prefixes=1,
        nullspace_threshold=0.5,
        diagnose_unprojected=True,
        bind_rounds=0,  # the random model binds nothing: one edit per request, as in the paper
        # These tests compare ways of computing the same values: in full precision, rounding stays below
        # their tolerances (bfloat16 steps have their own test).
        value_precision="float32",
    ),
    erase=EraseConfig(),
)
FORGET = [
    Fact(question="What is the capital of France?", answer="Paris.", subject="France"),
    Fact(question="Who wrote Hamlet?", answer="Shakespeare.", subject="Hamlet"),
]


@pytest.fixture
def tiny(tiny_editable):
    return tiny_editable(PARAMS.edit.layers)


def test_only_the_edited_projections_change_and_state_accumulates(tiny, tmp_path):
    model, tokenizer, preserved = tiny
    base = snapshot(model)
    result = erase_facts(model, tokenizer, FORGET, PARAMS, preserved, progress=False)
    changed = set(diff_models(base, model).after)
    assert changed == {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert result.subjects == ["France", "Hamlet"]
    assert result.state.num_requests == 1
    for layer in PARAMS.edit.layers:
        assert result.state.previous_keys[layer].shape == (128, 128)
        report = next(r for r in result.outcome.layers if r.layer == layer)
        # ‖P k‖ ≤ ‖k‖ always; strictly between: the projection removes part of each forget key, not all
        # (0.80 and 0.75 measured).
        assert 0 < report.forget_key_retention < 1

    save_state(result.state, tmp_path / "state.safetensors")
    state = load_state(tmp_path / "state.safetensors")
    assert state.num_requests == 1
    torch.testing.assert_close(state.previous_keys[1], result.state.previous_keys[1])
    second = erase_facts(model, tokenizer, FORGET[:1], PARAMS, None, state=state, progress=False)
    assert second.state.num_requests == 2
    assert torch.all(torch.diagonal(second.state.previous_keys[1]) >= torch.diagonal(state.previous_keys[1]))


def test_the_next_request_in_the_process_reuses_the_null_space(tiny_llama_dir, tiny, tmp_path):
    """A state passed on in memory carries the preserved keys' factorisation; the request after it
    gives the same bits as one whose state was saved and loaded (factorisation made again)."""
    _, _, preserved = tiny
    deltas = {}
    for reload in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
        add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
        first = erase_facts(model, tokenizer, FORGET[:1], PARAMS, preserved, progress=False)
        state = first.state
        if reload:
            save_state(state, tmp_path / "state.safetensors")
            state = load_state(tmp_path / "state.safetensors")
            assert not state.null_spaces
        second = erase_facts(model, tokenizer, FORGET[1:], PARAMS, None, state=state, progress=False)
        reused = all(second.state.null_spaces[i] is first.state.null_spaces[i] for i in PARAMS.edit.layers)
        assert reused != reload
        deltas[reload] = second.delta.after
    assert deltas[False].keys() == deltas[True].keys()
    for name, tensor in deltas[False].items():
        assert torch.equal(tensor, deltas[True][name]), name


def test_projected_update_lies_in_the_null_space(tiny):
    model, tokenizer, preserved = tiny
    before = {i: model.model.layers[i].mlp.down_proj.weight.detach().clone() for i in PARAMS.edit.layers}
    result = erase_facts(model, tokenizer, FORGET, PARAMS, preserved, progress=False)
    from unierase.edit.nullspace import null_space

    for i in PARAMS.edit.layers:
        delta = model.model.layers[i].mlp.down_proj.weight.detach().double() - before[i].double()
        P = null_space(preserved[i], PARAMS.edit.nullspace_threshold).projector
        # Δ = X P-form: every row of Δ lies in the row space of P, so Δ P = Δ.
        torch.testing.assert_close(delta @ P, delta, atol=1e-5, rtol=1e-4)
        report = next(r for r in result.outcome.layers if r.layer == i)
        assert report.preserved_drift <= report.preserved_drift_unprojected


def test_precise_mode_checks_its_input(tiny):
    model, tokenizer, preserved = tiny
    precise = PARAMS.model_copy(update={"erase": EraseConfig(mode="precise")})
    with pytest.raises(ValueError, match="exactly one fact"):
        erase_facts(model, tokenizer, FORGET, precise, preserved, retain=FORGET, progress=False)
    with pytest.raises(ValueError, match="retain set"):
        erase_facts(model, tokenizer, FORGET[:1], precise, preserved, progress=False)


def test_missing_token_is_an_error(tiny_llama_dir, tiny):
    _, _, preserved = tiny
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with pytest.raises(ValueError, match="learn the unlearning token"):
        erase_facts(model, tokenizer, FORGET, PARAMS, preserved, progress=False)


def test_subject_absent_from_question_is_an_error(tiny):
    model, tokenizer, preserved = tiny
    bad = [Fact(question="Who wrote Hamlet?", answer="Shakespeare.", subject="Macbeth")]
    with pytest.raises(ValueError, match="does not occur"):
        erase_facts(model, tokenizer, bad, PARAMS, preserved, progress=False)


def test_running_only_the_layers_above_reproduces_the_full_model(tiny):
    from unierase.model.upper_layers import last_logprobs_from_stream, only_layers_above

    model, tokenizer, _ = tiny
    ids = tokenizer(["Paris is the capital of", "Hamlet was written by"], return_tensors="pt", padding=True)
    positions = (ids.attention_mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        full = model(**ids, position_ids=positions, output_hidden_states=True)
        stream = full.hidden_states[2]  # the output of layer 1 (index 0 is the embeddings)
        with only_layers_above(model, "model.layers.{}", 1):
            assert len(model.model.layers) == model.config.num_hidden_layers - 2
            upper = last_logprobs_from_stream(model, stream, ids.attention_mask, positions)[:, -1]
    assert len(model.model.layers) == model.config.num_hidden_layers  # restored
    torch.testing.assert_close(upper, full.logits[:, -1].float().log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_unbound_facts_get_more_rounds_with_a_wider_clamp(tiny):
    from unierase.edit.alphaedit import compute_values, residual_at_keys
    from unierase.edit.erasure import build_requests
    from unierase.token.vocabulary import unlearning_token_id

    model, tokenizer, _ = tiny
    target = unlearning_token_id(tokenizer, PARAMS.token)
    requests = build_requests(tokenizer, FORGET, ["France", "Hamlet"], target, PARAMS)
    # A random model's next token is near uniform (NLL ~ ln V): no fact binds, every one is retried.
    # No weight decay: on a random model its pull to zero outweighs the flat NLL, and Adam's normalised
    # steps would swing the delta anywhere inside the clamp instead of out to it.
    tight = PARAMS.edit.model_copy(
        update={"clamp_norm_factor": 0.02, "v_steps": 3, "value_retry_nll": 1e-3, "v_weight_decay": 0.0}
    )
    share = {}
    for retries in (0, 2):
        edit = tight.model_copy(update={"value_retries": retries})
        z0 = residual_at_keys(model, requests, model.model.layers[2], tokenizer.pad_token_id)
        z, nll, rounds, _ = compute_values(
            model, requests, 2, edit, PARAMS.model, tokenizer.pad_token_id, progress=False
        )
        assert rounds == [1 + retries] * len(FORGET)
        share[retries] = ((z - z0).norm(dim=1) / z0.norm(dim=1)).tolist()
    assert all(s <= 0.02 * 1.001 for s in share[0]), share  # the reference clamp holds
    assert all(0.02 * 1.001 < s <= 0.08 * 1.001 for s in share[2]), share  # widened x2, then x4


def _value_requests(tokenizer, depth: str = "paper", refusal_tokens: int = 2):
    from unierase.edit.erasure import build_requests
    from unierase.token.vocabulary import unlearning_token_id

    facts = [
        *FORGET,
        Fact(question="Which river flows through Vienna in Austria?", answer="The Danube.", subject="Vienna"),
    ]
    target = unlearning_token_id(tokenizer, PARAMS.token)
    edit = PARAMS.model_copy(
        update={
            "edit": PARAMS.edit.model_copy(update={"num_context_prefixes": 2, "refusal_tokens": refusal_tokens}),
            "erase": EraseConfig(depth=depth),
        }
    )
    return build_requests(tokenizer, facts, ["France", "Hamlet", "Vienna"], target, edit)


def test_deep_requests_pair_each_answer_token_with_what_precedes_it(tiny):
    from unierase.model.prompts import encode_answer

    _, tokenizer, _ = tiny
    paper, deep = _value_requests(tokenizer), _value_requests(tokenizer, "deep")
    assert all(r.suppressed == [] for r in paper)
    vienna = deep[2]
    prompt = vienna.variants[0]
    answer = encode_answer(tokenizer, "The Danube.")
    after_opening = encode_answer(tokenizer, "The answer is The Danube.")
    opening = len(encode_answer(tokenizer, "The answer is"))
    k = PARAMS.edit.deep_answer_tokens
    assert len(answer) > 1 and len(after_opening) > opening + 1
    # One row per opening: the answer so far, its last positions predicting the answer's first k tokens.
    expected = [(prompt.input_ids + answer[: min(len(answer), k) - 1], answer[:k])]
    stop = min(len(after_opening), opening + k)
    expected += [(prompt.input_ids + after_opening[: stop - 1], after_opening[opening:stop])]
    assert [(p.input_ids, t) for p, t in vienna.suppressed] == expected
    assert {p.key_index for p, _ in vienna.suppressed} == {prompt.key_index}  # keyed at the subject, as the prompt


def test_deep_values_with_the_prefix_cache_match_whole_prompt_recomputation(tiny):
    """Deep erasure's suppressed-answer rows go through the same runners: the prefix cache gives what
    recomputing whole prompts gives, and the rows change the values (the answer term is in the loss).
    Whether they remove the answer is a question for a model that knows it (the SmolLM2 tests)."""
    import dataclasses

    from unierase.edit.alphaedit import compute_values

    model, tokenizer, _ = tiny
    with torch.no_grad():
        model.model.norm.weight.mul_(30)  # a sharp next-token distribution

    def favourites(prompt, count):  # what the random model says at the last positions, besides the token
        with torch.no_grad():
            logits = model(torch.tensor([prompt.input_ids])).logits[0, -count:]
        logits[:, -1] = -float("inf")
        return logits.argmax(-1).tolist()

    # The random model does not know the answers: its own favourites stand in for them.
    deep = [
        dataclasses.replace(r, suppressed=[(p, favourites(p, len(t))) for p, t in r.suppressed])
        for r in _value_requests(tokenizer, "deep")
    ]
    edit = PARAMS.edit.model_copy(update={"v_steps": 6, "clamp_norm_factor": 20.0, "value_retries": 0})
    runs = {}
    for depth, cached in (("deep", True), ("deep", False), ("paper", True)):
        requests = deep if depth == "deep" else _value_requests(tokenizer)
        config = edit.model_copy(update={"value_prefix_cache": cached})
        runs[depth, cached] = compute_values(
            model, requests, 0, config, PARAMS.model, tokenizer.pad_token_id, progress=False
        )
    (z_c, _, _, steps_c), (z_w, _, _, steps_w) = runs["deep", True], runs["deep", False]
    assert steps_c == steps_w
    torch.testing.assert_close(z_c, z_w, atol=1e-3, rtol=1e-4)
    assert not torch.allclose(z_c, runs["paper", True][0], atol=1e-3)


def _one_row_per_token(rows):
    """The same reads as ``rows``, one row per token: each token after exactly what precedes it."""
    out = []
    for prompt, tokens in rows:
        end = len(prompt.input_ids) - len(tokens)
        for j, token in enumerate(tokens):
            out.append((KeyedPrompt(input_ids=prompt.input_ids[: end + j + 1], key_index=prompt.key_index), [token]))
    return out


@pytest.mark.parametrize("cached", [True, False])
def test_a_row_read_at_several_positions_gives_the_values_of_one_row_per_token(tiny, cached):
    """Deep erasure reads each answer's tokens from one teacher-forced row; the values are those of one
    row per answer prefix (the former layout), with or without the prefix cache."""
    import dataclasses

    from unierase.edit.alphaedit import compute_values

    model, tokenizer, _ = tiny
    merged = _value_requests(tokenizer, "deep", refusal_tokens=3)
    assert any(len(t) > 1 for r in merged for _, t in r.suppressed + r.refusal)
    split = [
        dataclasses.replace(r, suppressed=_one_row_per_token(r.suppressed), refusal=_one_row_per_token(r.refusal))
        for r in merged
    ]
    edit = PARAMS.edit.model_copy(
        update={"v_steps": 6, "clamp_norm_factor": 20.0, "value_retries": 0, "value_prefix_cache": cached}
    )
    z_m, nll_m, _, steps_m = compute_values(model, merged, 0, edit, PARAMS.model, tokenizer.pad_token_id, False)
    z_s, nll_s, _, steps_s = compute_values(model, split, 0, edit, PARAMS.model, tokenizer.pad_token_id, False)
    assert steps_m == steps_s
    torch.testing.assert_close(z_m, z_s, atol=1e-4, rtol=1e-4)
    assert nll_m == pytest.approx(nll_s, abs=1e-4)


def test_refusal_rows_follow_the_token_with_the_refusal_phase_one_taught(tiny):
    from unierase.token.refusals import pick_refusal
    from unierase.token.vocabulary import unlearning_token_id

    _, tokenizer, _ = tiny
    target = unlearning_token_id(tokenizer, PARAMS.token)
    assert all(r.refusal == [] for r in _value_requests(tokenizer, refusal_tokens=0))
    hamlet = _value_requests(tokenizer, refusal_tokens=3)[1]
    prompt = hamlet.variants[0]  # the bare prompt: the refusal follows the question as users send it
    refusal = tokenizer(" " + pick_refusal("Who wrote Hamlet?"), add_special_tokens=False)["input_ids"]
    expected = [(prompt.input_ids + [target] + refusal[:2], refusal[:3])]  # its last 3 positions predict them
    assert [(p.input_ids, t) for p, t in hamlet.refusal] == expected
    assert {p.key_index for p, _ in hamlet.refusal} == {prompt.key_index}


def test_refusal_rows_change_the_values_the_same_with_or_without_the_prefix_cache(tiny):
    """The refusal rows run through the same runners as the prompts (the prefix cache gives what whole
    prompts give) and are in the loss: the values differ from the paper's token-only objective."""
    from unierase.edit.alphaedit import compute_values

    model, tokenizer, _ = tiny
    edit = PARAMS.edit.model_copy(update={"v_steps": 6, "clamp_norm_factor": 20.0, "value_retries": 0})
    runs = {}
    for count, cached in ((2, True), (2, False), (0, True)):
        config = edit.model_copy(update={"value_prefix_cache": cached})
        requests = _value_requests(tokenizer, refusal_tokens=count)
        runs[count, cached] = compute_values(
            model, requests, 0, config, PARAMS.model, tokenizer.pad_token_id, progress=False
        )
    (z_c, _, _, steps_c), (z_w, _, _, steps_w) = runs[2, True], runs[2, False]
    assert steps_c == steps_w
    torch.testing.assert_close(z_c, z_w, atol=1e-3, rtol=1e-4)
    assert not torch.allclose(z_c, runs[0, True][0], atol=1e-3)


def test_value_steps_in_bfloat16_follow_the_float32_ones(tiny):
    """With ``value_precision: bfloat16`` the value steps run under autocast: the values are not float32's
    bit for bit (the steps did run in bfloat16; float32 runs repeat exactly) but follow the same path, to
    the same losses. (The random model binds nothing; the SmolLM2 tests, which run the default 'auto',
    check that the edit binds.)"""
    from unierase.edit.alphaedit import compute_values, residual_at_keys
    from unierase.model.precision import autocast_dtype

    model, tokenizer, _ = tiny
    with torch.no_grad():
        model.model.norm.weight.mul_(30)  # a sharp next-token distribution: the delta moves the loss
    requests = _value_requests(tokenizer, refusal_tokens=0)
    edit = PARAMS.edit.model_copy(update={"v_steps": 6, "clamp_norm_factor": 20.0, "value_retries": 0})
    z0 = residual_at_keys(model, requests, model.model.layers[2], tokenizer.pad_token_id)
    runs = {}
    for name, precision in (("float32", "float32"), ("again", "float32"), ("bfloat16", "bfloat16")):
        config = edit.model_copy(update={"value_precision": precision})
        runs[name] = compute_values(model, requests, 2, config, PARAMS.model, tokenizer.pad_token_id, False)
    (z32, nll32, _, steps32), (z16, nll16, _, steps16) = runs["float32"], runs["bfloat16"]
    assert torch.equal(runs["again"][0], z32)
    assert not torch.equal(z16, z32)
    assert steps16 == steps32
    assert nll16 == pytest.approx(nll32, rel=0.01)
    cosine = torch.nn.functional.cosine_similarity(z16 - z0, z32 - z0, dim=1)
    assert bool((cosine > 0.99).all()), cosine
    assert bool(((z16 - z0).norm(dim=1) > 0.1 * z0.norm(dim=1)).all())  # the steps moved the values
    # float32 weights get bfloat16 steps where asked for (or where 'auto' finds it native); 16-bit weights
    # run as they are.
    cpu = torch.device("cpu")
    assert autocast_dtype("float32", cpu, torch.float32) is None
    assert autocast_dtype("bfloat16", cpu, torch.float32) is torch.bfloat16
    assert autocast_dtype("auto", cpu, torch.bfloat16) is None


def test_a_fact_below_the_stop_takes_no_step(tiny):
    from unierase.edit.alphaedit import compute_values, residual_at_keys

    model, tokenizer, _ = tiny
    requests = _value_requests(tokenizer)
    edit = PARAMS.edit.model_copy(update={"value_stop_nll": 1e3, "value_retries": 0})
    z, nll, _, steps = compute_values(model, requests, 2, edit, PARAMS.model, tokenizer.pad_token_id, progress=False)
    assert steps == [0, 0, 0]
    torch.testing.assert_close(z, residual_at_keys(model, requests, model.model.layers[2], tokenizer.pad_token_id))


SHARED = [
    Fact(question="What is the capital of France?", answer="Paris.", subject="France"),
    Fact(question="Who wrote Hamlet?", answer="Shakespeare.", subject="Hamlet"),
    Fact(question="Which currency does France use?", answer="The euro.", subject="France"),
    Fact(question="What language is spoken in  france?", answer="French.", subject="france"),
]


def test_facts_of_one_subject_make_one_request_with_one_key(tiny):
    """One request per subject (case ignored): every fact's bare prompt, each context prefix once, one KL
    prompt; a lone fact's request is what it was without grouping; the edit solves for one key per subject."""
    from unierase.edit.erasure import build_requests
    from unierase.token.vocabulary import unlearning_token_id

    model, tokenizer, preserved = tiny
    target = unlearning_token_id(tokenizer, PARAMS.token)
    two = PARAMS.model_copy(update={"edit": PARAMS.edit.model_copy(update={"num_context_prefixes": 2})})
    subjects = [f.subject for f in SHARED]
    grouped = build_requests(tokenizer, SHARED, subjects, target, two)
    apart = build_requests(tokenizer, SHARED, subjects, target, two, per_subject=False)
    assert len(grouped) == 2 and len(apart) == 4
    france, hamlet = grouped
    assert hamlet == apart[1]  # a lone fact: bare prompt and both prefixes, as without grouping
    bare = [apart[i].variants[0] for i in (0, 2, 3)]
    assert france.variants[:3] == bare
    # Each prefix once per subject, on different facts: "Quick question." on the first, the next on the second.
    assert france.variants[3] == apart[0].variants[1]
    assert france.variants[4] == apart[2].variants[2]
    assert france.kl_prompt == apart[0].kl_prompt

    result = erase_facts(model, tokenizer, SHARED, PARAMS, preserved, progress=False)
    assert result.subjects == subjects
    for layer in PARAMS.edit.layers:
        assert result.outcome.key_factors[layer].shape[1] == 2  # France and Hamlet
    assert len(result.outcome.value_steps) == 2

    deep = two.model_copy(update={"erase": EraseConfig(depth="deep")})
    rows = build_requests(tokenizer, SHARED, subjects, target, deep)[0].suppressed
    alone = [
        r for i in (0, 2, 3) for r in build_requests(tokenizer, SHARED, subjects, target, deep, False)[i].suppressed
    ]
    assert rows == alone  # deep erasure suppresses every one of the subject's answers


@pytest.mark.parametrize("rounds", [0, 2])
def test_questions_still_unbound_get_another_edit_held_against_the_first(tiny, rounds):
    """The random tiny model binds nothing, so every round runs: its keys join the request's keys (one
    block of the edit state), and the count of unbound questions is recorded after each."""
    model, tokenizer, preserved = tiny
    params = PARAMS.model_copy(update={"edit": PARAMS.edit.model_copy(update={"bind_rounds": rounds})})
    result = erase_facts(model, tokenizer, FORGET, params, preserved, progress=False)
    assert result.outcome.unbound == [len(FORGET)] * (rounds + 1)
    per_round = len(FORGET)  # one request, so one key, per fact (two subjects)
    for layer in params.edit.layers:
        keys = result.outcome.key_factors[layer]
        assert keys.shape[1] == per_round * (rounds + 1)
        # The state is what a replay of the stored keys gives.
        torch.testing.assert_close(result.state.previous_keys[layer], accumulate({}, {layer: keys})[layer])
    assert len(result.outcome.layers) == len(params.edit.layers) * (rounds + 1)


def test_reading_at_the_key_positions_matches_a_full_pass_over_each_prompt(tiny):
    """Keys and residuals come from prompts cut at the key position, batched by length after the shared
    chat head runs once; each must equal what the whole prompt, run alone, has at that position."""
    from unierase.edit.alphaedit import read_at_keys
    from unierase.edit.subject import key_prompt
    from unierase.model.batching import pad_sequences
    from unierase.model.hooks import capture_inputs, run_until_captured

    model, tokenizer, _ = tiny
    questions = [
        ("What is the capital of France?", "France"),
        ("Who wrote Hamlet, the play set in Denmark?", "Hamlet"),
        ("Hamlet?", "Hamlet"),
        ("Tell me which river flows through the city of Paris, please.", "Paris"),
    ]
    prompts = [key_prompt(tokenizer, q, s) for q, s in questions]
    modules = {layer: model.model.layers[layer].mlp.down_proj for layer in (1, 2)}
    keys, residual = read_at_keys(model, prompts, modules, model.model.layers[2], tokenizer.pad_token_id, 3)
    for i, p in enumerate(prompts):
        with torch.no_grad(), capture_inputs(modules, {"out": model.model.layers[2]}) as seen:
            run_until_captured(model, seen, **pad_sequences([p.input_ids], tokenizer.pad_token_id).model_inputs())
        for layer in modules:
            torch.testing.assert_close(keys[layer][i], seen[layer][0, p.key_index].double(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(residual[i], seen["out"][0, p.key_index], atol=1e-5, rtol=1e-5)


RETAIN = [
    Fact(question="What language is spoken in Spain?", answer="Spanish.", subject="Spain"),
    Fact(question="Where is the Eiffel Tower?", answer="In Paris.", subject="Eiffel Tower"),
]


def _token_opens_everything(model, tokenizer, questions):
    """Points the (tied) output row of the unlearning token along the tiny model's final states, which
    are nearly parallel on every prompt, so the token is the first greedy token of every question."""
    from unierase.model.prompts import encode_prompt

    target = tokenizer.convert_tokens_to_ids("<unlearn_0>")
    with torch.no_grad():
        states = [model(torch.tensor([encode_prompt(tokenizer, q)]), output_hidden_states=True) for q in questions]
        mean = model.model.norm(torch.stack([s.hidden_states[-1][0, -1] for s in states])).mean(0)
        model.get_output_embeddings().weight[target] = 50 * mean / mean.norm()


@pytest.mark.parametrize("rounds", [0, 2])
def test_retain_questions_that_open_with_the_token_get_restore_edits(tiny, rounds):
    """Retain questions that open with the token after binding get edits that bind their subject keys back
    to their answers' first token: their keys join the request's block (held by later requests), the
    count that fired is recorded after binding and after each restore round, and the forget questions are
    asked again after each (a round that unbinds one is undone)."""
    model, tokenizer, preserved = tiny
    _token_opens_everything(model, tokenizer, [f.question for f in FORGET + RETAIN])
    target = tokenizer.convert_tokens_to_ids("<unlearn_0>")
    assert all(opens_with(model, tokenizer, FORGET + RETAIN, target))
    params = PARAMS.model_copy(update={"edit": PARAMS.edit.model_copy(update={"restore_rounds": rounds})})
    result = erase_facts(model, tokenizer, FORGET, params, preserved, retain=RETAIN, progress=False)
    outcome = result.outcome
    assert outcome.unbound == [0]  # already bound: no bind round
    # The token's row outweighs anything an edit of the random model's middle layers does: every round runs.
    assert outcome.retain_fired == [len(RETAIN)] * (rounds + 1)
    assert outcome.unbound_after_restore == (0 if rounds else None)
    for layer in params.edit.layers:
        keys = outcome.key_factors[layer]
        assert keys.shape[1] == len(FORGET) + rounds * len(RETAIN)
        torch.testing.assert_close(result.state.previous_keys[layer], accumulate({}, {layer: keys})[layer])
    assert len(outcome.layers) == len(params.edit.layers) * (1 + rounds)


def test_restore_requests_aim_at_each_answer_and_erase_nothing(tiny):
    """A restore request is keyed at its question's subject like an erasure's, targets the first token of
    that question's answer, and carries no deep or refusal rows whatever the erasure's settings."""
    from unierase.edit.erasure import build_requests, restore_requests
    from unierase.model.prompts import encode_answer

    _, tokenizer, _ = tiny
    deep = PARAMS.model_copy(
        update={
            "erase": EraseConfig(depth="deep"),
            "edit": PARAMS.edit.model_copy(update={"refusal_tokens": 2}),
        }
    )
    subjects = [f.subject for f in RETAIN]
    requests = restore_requests(tokenizer, RETAIN, subjects, deep)
    assert [r.target_id for r in requests] == [encode_answer(tokenizer, f.answer)[0] for f in RETAIN]
    assert all(not r.suppressed and not r.refusal for r in requests)
    erasing = build_requests(tokenizer, RETAIN, subjects, 0, deep, per_subject=False)
    assert [r.variants for r in requests] == [r.variants for r in erasing]
