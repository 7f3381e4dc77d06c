"""harness.py (our checkpoints as an lm-eval model type) and eval_downstream.py, offline.

lm-eval is optional (requirements-eval.txt): these tests skip without it on a developer's
machine, and fail without it in CI (CI=true), where scripts/test.sh installs it."""
import csv
import importlib
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import eval_downstream
from checkpoint import load_model
from data.tokenizer import EOT, ByteTokenizer, get_encoding
from helpers import help_text, optional_module

try:   # lm-eval loaded once at collection rather than by each test process: mutation testing forks one per
    importlib.import_module("harness")   # mutant from the collected process, and lm-eval's import takes seconds
    importlib.import_module("lm_eval.tasks")
except ImportError:   # optional: the harness fixture below skips (or fails in CI) without it
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = os.path.join(ROOT, "tests", "lm_eval_tasks")


@pytest.fixture(scope="module")
def harness():
    optional_module("lm_eval", eval_downstream.INSTALL)
    import harness
    return harness


def request(*args):
    return SimpleNamespace(args=args)  # what the model reads of lm-eval's Instance


def forward_losses(model, tokens):
    """Per-token cross-entropy of tokens[1:] after tokens[:-1], from GPT.forward's logits."""
    x = torch.tensor(tokens)
    with torch.no_grad():
        logits, _ = model(x[None, :-1], x[None, 1:])
    return F.cross_entropy(logits[0].float(), x[1:], reduction="none")


def test_pairs_windows_and_options_by_hand(harness):
    """The pure pieces of harness.py on byte tokens (one token a byte, NUL the separator)."""
    tok = ByteTokenizer()
    # the context's trailing space moves to the continuation, as running text tokenises it
    assert harness.split_pair(tok, "Hello ", "world") == ([0] + list(b"Hello"), list(b" world"))
    assert harness.split_pair(tok, "", "Hi") == ([0], list(b"Hi"))
    # every token after the separator scored once; later windows have a full max_length of input
    assert harness.rolling_windows(list(range(10)), 4) == [([0], [1, 2, 3, 4]), ([4], [5, 6, 7, 8]),
                                                           ([5, 6, 7, 8], [9])]
    assert harness.rolling_windows([0, 1, 2], 1) == [([0], [1]), ([1], [2])]
    assert harness.rolling_windows([0, 1, 2], 8) == [([0], [1, 2])] and harness.rolling_windows([0], 8) == []
    assert [harness.window_tokens(m, 32) for m in ("16x", "2x", None, 0, 64, "48")] == [512, 64, 32, 32, 64, 48]
    options = harness.generation_options
    assert options(None) == {"until": [], "max_gen_toks": 256, "temperature": 0.0, "top_k": None}
    assert options({"until": ["", "\n"], "max_gen_toks": 5, "max_new_tokens": 9})["until"] == ["\n"]
    assert options({"max_gen_toks": 5, "max_new_tokens": 9})["max_gen_toks"] == 5   # lm-eval's own order
    assert options({"max_gen_toks": None, "max_new_tokens": 9})["max_gen_toks"] == 9
    assert options({"temperature": None, "top_p": 1.0, "top_k": 4}) == {"until": [], "max_gen_toks": 256,
                                                                        "temperature": 0.0, "top_k": None}
    assert options({"do_sample": True, "temperature": 0.5, "top_k": "3", "top_p": 1}) == {
        "until": [], "max_gen_toks": 256, "temperature": 0.5, "top_k": 3}
    assert options({"do_sample": True, "top_k": 1})["top_k"] == 1
    assert options({"max_gen_toks": 1})["max_gen_toks"] == 1


def test_loglikelihood_equals_forward_token_losses(harness, gpt2_vocab_run):
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=2)  # several batches, mixed lengths
    model, _ = load_model(gpt2_vocab_run)
    enc = get_encoding()
    pairs = [("The quick brown fox", " jumps over the lazy dog"), ("", "In the beginning"),
             ("Question: What do bees make?\nAnswer:", " honey"), ("And God said", " Let there be light"),
             ("A", " b")]
    results = lm.loglikelihood([request(*p) for p in pairs])
    for (context, continuation), (logprob, greedy) in zip(pairs, results):
        head, tail = enc.encode_ordinary(context), enc.encode_ordinary(continuation)
        assert harness.split_pair(lm.tok, context, continuation) == ([EOT] + head, tail)
        losses = forward_losses(model, [EOT] + head + tail)[-len(tail):]
        assert logprob == pytest.approx(-losses.sum().item(), abs=1e-4)
        x = torch.tensor([EOT] + head + tail)
        with torch.no_grad():
            logits, _ = model(x[None, :-1], x[None, 1:])
        expect_greedy = bool((logits[0, -len(tail):, :enc.n_vocab].argmax(-1) == x[-len(tail):]).all())
        assert greedy == expect_greedy
    # whitespace at the end of a context belongs to the continuation, as GPT-2 tokenises it
    assert harness.split_pair(lm.tok, "The sky is ", "blue") == harness.split_pair(lm.tok, "The sky is", " blue")


def test_contexts_past_max_length_lose_their_left_end(harness, gpt2_vocab_run):
    model, _ = load_model(gpt2_vocab_run)
    context = " ".join(["The grass is green and the sky is blue."] * 6)
    continuation = " Here we go again."
    short = harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=16)
    head, tail = harness.split_pair(short.tok, context, continuation)
    assert len(head) + len(tail) > 40
    (logprob, _), = short.loglikelihood([request(context, continuation)])
    expected = forward_losses(model, (head + tail)[-17:])[-len(tail):].sum().item()
    assert logprob == pytest.approx(-expected, abs=1e-4)
    # the default window (the training context, 32) sees more of the context, so scores otherwise
    default = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    assert default.max_length == 32
    (longer, _), = default.loglikelihood([request(context, continuation)])
    assert longer == pytest.approx(-forward_losses(model, (head + tail)[-33:])[-len(tail):].sum().item(), abs=1e-4)
    assert longer != pytest.approx(logprob, abs=1e-3)
    with pytest.raises(ValueError, match=r"max_length 513 is outside 1\.\.512 \(up to 16x the training context"):
        harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=513)
    with pytest.raises(ValueError, match="does not fit in max_length 4"):
        harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=4).loglikelihood([request("a", continuation * 2)])


def test_rolling_loglikelihood_scores_every_token_once(harness, gpt2_vocab_run):
    tokens = list(range(100, 111))  # a prefix token and 10 text tokens
    pairs = harness.rolling_windows(tokens, 4)
    scored = [t for _, cont in pairs for t in cont]
    assert scored == tokens[1:]
    for ctx, cont in pairs:
        assert ctx + cont == tokens[tokens.index(ctx[0]):tokens.index(cont[-1]) + 1]
    # every window reads max_length inputs: the last one re-reads 2 scored tokens as its context
    assert [(len(ctx), len(cont)) for ctx, cont in pairs] == [(1, 4), (1, 4), (3, 2)]
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    model, _ = load_model(gpt2_vocab_run)
    text = "In the beginning God created the heaven and the earth."
    ids = [EOT] + lm.tok.encode(text)
    assert len(ids) <= 33
    total, = lm.loglikelihood_rolling([request(text)])
    assert total == pytest.approx(-forward_losses(model, ids).sum().item(), abs=1e-4)
    lm.max_length = 4  # windows: each token still scored once, with less context, so a lower likelihood
    cut, = lm.loglikelihood_rolling([request(text)])
    assert cut != pytest.approx(total, abs=1e-3)
    # the document's total is the sum over its windows, each scored by the plain forward
    windows = harness.rolling_windows(ids, 4)
    assert len(windows) == 3 and cut == pytest.approx(
        -sum(forward_losses(model, ctx + cont)[-len(cont):].sum().item() for ctx, cont in windows), abs=1e-4)


def test_answers_go_to_lm_evals_cache_and_a_terminal_shows_progress(harness, gpt2_vocab_run, monkeypatch):
    """lm-eval's --use_cache stores each answer through cache_hook.add_partial(kind, request args, answer);
    the progress bars are shown on a terminal unless lm-eval asks for none."""
    import tqdm
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=8)
    stored, bars = [], []

    class Hook:
        def add_partial(self, attr, req, res):
            stored.append((attr, req, res))
    lm.set_cache_hook(Hook())
    updates = []

    class Bar:   # what harness.py uses of a tqdm bar
        def __init__(self, iterable=None):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def update(self, n):
            updates.append(n)

        def close(self):
            updates.append("closed")

    def spy(*args, **kwargs):
        bars.append((kwargs["desc"], kwargs["disable"], kwargs.get("total")))
        return Bar(*args)
    monkeypatch.setattr(tqdm, "tqdm", spy)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    pairs = [request("And God said", " Let"), request("A", " b")]
    scores = lm.loglikelihood(pairs)
    text = "In the beginning God created the heaven and the earth."
    total, = lm.loglikelihood_rolling([request(text)])
    texts = lm.generate_until([request("And God said", {"max_gen_toks": 2})])
    assert stored == [("loglikelihood", ("And God said", " Let"), scores[0]), ("loglikelihood", ("A", " b"), scores[1]),
                      ("loglikelihood_rolling", (text,), total),
                      ("generate_until", ("And God said", {"max_gen_toks": 2}), texts[0])]
    assert bars == [("loglikelihood", False, None), ("loglikelihood", False, None), ("generate_until", False, 1)]
    assert updates == [1, "closed"]   # the generation bar counts requests
    bars.clear()
    lm.loglikelihood(pairs, disable_tqdm=True)
    lm.loglikelihood_rolling([request(text)], disable_tqdm=True)
    lm.generate_until([request("A", {"max_gen_toks": 2})], disable_tqdm=True)
    assert bars == [("loglikelihood", True, None), ("loglikelihood", True, None), ("generate_until", True, 1)]
    bars.clear()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)   # a log file: no bars
    lm.loglikelihood(pairs)
    lm.generate_until([request("A", {"max_gen_toks": 2})])
    assert bars == [("loglikelihood", True, None), ("generate_until", True, 1)]
    # the defaults: 16 requests a batch, the device picked ("auto": the CPU where no GPU is)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plain = harness.LssaGPT(gpt2_vocab_run)
    assert (plain.batch_size, plain._device, plain.overrides) == (16, "cpu", {})
    assert harness.LssaGPT(gpt2_vocab_run, device=None)._device == "cpu"   # None: auto, as lm-eval may pass it
    assert harness.LssaGPT(gpt2_vocab_run, attention_backend="reference").overrides == {"attention_backend": "reference"}
    # what lm-eval records of the model in its results
    assert lm.get_model_info() == {"checkpoint": lm.ckpt["path"], "step": 2, "attention": "lssar", "reweight_p": 15.0,
                                   "overrides": {}, "train_context": 32, "max_length": 8, "tokenizer": "gpt2"}
    assert os.path.dirname(lm.ckpt["path"]) == gpt2_vocab_run
    # a prompt keeps at least one token: max_gen_toks up to max_length - 1
    assert lm.context_tokens("And God said", 7) == ([EOT] + lm.tok.encode("And God said"))[-1:]


def greedy_by_hand(model, tokens, until, limit, vocab):
    """(greedy text, tokens it took) after token ids by the no-cache forward: the argmax over the
    tokenizer's real tokens of the whole sequence's last logits, one token at a time, cut at the
    first stop."""
    enc, new = get_encoding(), []
    for _ in range(limit):
        with torch.no_grad():
            token = int(model(torch.tensor([tokens + new]))[0][0, -1, :vocab].argmax())
        if token == EOT:
            return enc.decode(new), len(new) + 1
        new.append(token)
        if any(s in enc.decode(new) for s in until):
            break
    text = enc.decode(new)
    return text[:min((text.find(s) for s in until if s in text), default=len(text))], len(new)


def test_the_models_arguments_at_their_bounds(harness, gpt2_vocab_run, monkeypatch):
    """The smallest window and batch are accepted, one less is a one-line error; None and lm-eval's
    "auto" mean a batch of 16; a model's vocabulary equal to its tokenizer's is enough, one token
    smaller is refused naming the checkpoint, both sizes and the tokenizer; an explicit device
    is used even where a GPU is visible (auto would take it)."""
    assert harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=1).max_length == 1
    with pytest.raises(ValueError, match=r"max_length -1 is outside 1\.\.512"):   # 0 means the default
        harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length=-1)
    assert harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=1).batch_size == 1
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=0)
    for spelling in (None, "auto"):
        assert harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=spelling).batch_size == 16
    real = harness.tokenizer_of
    # stand-in tokenizers: the model's vocabulary size (50,304, conftest's gpt2_vocab_run), then one more
    monkeypatch.setattr(harness, "tokenizer_of", lambda ckpt: SimpleNamespace(name="gpt2", vocab_size=50304))
    harness.LssaGPT(gpt2_vocab_run, device="cpu")
    monkeypatch.setattr(harness, "tokenizer_of", lambda ckpt: SimpleNamespace(name="gpt2", vocab_size=50305))
    with pytest.raises(ValueError, match=r"ckpt_\d+\.pt: its vocabulary of 50304 tokens is smaller than the "
                                         r"gpt2 tokenizer's 50305: it was not trained on gpt2 tokens"):
        harness.LssaGPT(gpt2_vocab_run, device="cpu")
    monkeypatch.setattr(harness, "tokenizer_of", real)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # auto would pick cuda, which load_model lacks here
    cpu = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    assert cpu._device == "cpu" and type(cpu.autocast).__name__ == "nullcontext"   # fp32 on the CPU
    # on a CUDA device the model runs under bf16 autocast: the device stood in for, the model loaded on the CPU
    load = harness.load_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(harness, "pick_device", lambda name: "cuda")
    monkeypatch.setattr(harness, "load_model", lambda path, device, **kw: load(path, "cpu", **kw))
    with pytest.warns(UserWarning, match="CUDA is not available"):   # torch disables it here, after recording it
        gpu = harness.LssaGPT(gpt2_vocab_run)
    assert isinstance(gpu.autocast, torch.autocast) and (gpu.autocast.device, gpu.autocast.fast_dtype) == \
        ("cuda", torch.bfloat16)


def test_generate_until_batches_by_length_and_stops_per_request(harness, gpt2_vocab_run):
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=3)
    model, _ = load_model(gpt2_vocab_run)
    prompts = ["And God said", "In the beginning God created the heaven and the earth", "A",
               "The quick brown fox jumps", "Question: What do bees make?\nAnswer:"]
    free = [greedy_by_hand(model, [EOT] + lm.tok.encode(p), [], 10, lm.tok.vocab_size)[0] for p in prompts]
    # each request's own stop: the second and third characters of its free text; its own limit
    kwargs = [{"until": [f[1:3]], "max_gen_toks": 10} for f in free]
    kwargs[2] = {"until": "never appears", "max_gen_toks": 4}
    calls = []
    generate = lm.model.generate

    def spy(idx, *a, **k):
        out = generate(idx, *a, **k)
        calls.append((idx.clone(), k["pad"].tolist(), out.size(1) - idx.size(1)))
        return out
    lm.model.generate = spy
    out = lm.generate_until([request(p, k) for p, k in zip(prompts, kwargs)])
    lm.model.generate = generate
    steps = []
    for text, p, k, f in zip(out, prompts, kwargs, free):
        until = [k["until"]] if isinstance(k["until"], str) else k["until"]
        expected, n = greedy_by_hand(model, [EOT] + lm.tok.encode(p), until, k["max_gen_toks"], lm.tok.vocab_size)
        assert text == expected and f.startswith(text)
        steps.append(n)
    assert [len(o) for o in out[:2]] == [1, 1]   # cut before the stop, which starts at the second character
    # two batches (batch_size 3), longest prompts first, left-padded with the separator; each
    # ends when its last row has met its own stop or limit
    lengths = [len(lm.tok.encode(p)) + 1 for p in prompts]
    order = sorted(range(5), key=lambda i: -lengths[i])
    assert [idx.shape for idx, _, _ in calls] == [(3, lengths[order[0]]), (2, lengths[order[3]])]
    assert calls[0][1] == [lengths[order[0]] - lengths[i] for i in order[:3]]
    assert calls[1][1] == [0, lengths[order[3]] - lengths[order[4]]]
    assert (calls[0][0][2, :calls[0][1][2]] == EOT).all()
    assert [c[2] for c in calls] == [max(steps[i] for i in order[:3]), max(steps[i] for i in order[3:])]


def test_generate_until_sampling_options(harness, gpt2_vocab_run):
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    options = harness.generation_options
    assert options({"until": "\n"}) == {"until": ["\n"], "max_gen_toks": 256, "temperature": 0.0, "top_k": None}
    assert options({"do_sample": False, "temperature": 0.7, "top_k": 5})["temperature"] == 0.0   # greedy
    assert options({"temperature": 0.7})["temperature"] == 0.7            # lm-eval: a temperature samples
    assert options({"do_sample": True, "top_k": 3}) == {"until": [], "max_gen_toks": 256, "temperature": 1.0,
                                                        "top_k": 3}
    assert options({"max_new_tokens": 7})["max_gen_toks"] == 7
    for bad, message in (({"top_p": 0.9, "do_sample": True}, "top_p=0.9 is not supported"),
                         ({"temperature": -1}, "temperature must be >= 0"),
                         ({"top_k": 0, "do_sample": True}, "top_k must be a positive integer"),
                         ({"top_p": 2, "do_sample": True}, "top_p=2 is not supported"),
                         ({"max_gen_toks": 0}, "max_gen_toks must be at least 1")):
        with pytest.raises(ValueError, match=message):
            options(bad)
    prompt = "And God said"
    greedy, = lm.generate_until([request(prompt, {"max_gen_toks": 6})])
    torch.manual_seed(0)   # sampling from the top 1 is greedy; from more, with a high temperature, it is not
    assert lm.generate_until([request(prompt, {"max_gen_toks": 6, "do_sample": True, "top_k": 1})]) == [greedy]
    sampled = {lm.generate_until([request(prompt, {"max_gen_toks": 6, "temperature": 5.0})])[0] for _ in range(3)}
    assert len(sampled) > 1
    with pytest.raises(ValueError, match="max_gen_toks 32 leaves no room for a prompt in max_length 32"):
        lm.generate_until([request(prompt, {"max_gen_toks": 32})])
    # a long prompt keeps its last max_length - max_gen_toks tokens (lm-eval's hf model cuts there too)
    long = " ".join(["the sky is blue"] * 20)
    assert lm.context_tokens(long, 8) == ([EOT] + lm.tok.encode(long))[-24:]


def test_tiny_generation_task_end_to_end(harness, gpt2_vocab_run):
    report = eval_downstream.main([gpt2_vocab_run, "--include_path", TASKS, "--tasks", "tiny_gen", "--device", "cpu",
                                   "--limit", "12"])
    run = report["runs"][0]
    assert run["samples"] == {"tiny_gen": 12}
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    docs = [json.loads(line) for line in open(os.path.join(TASKS, "tiny_mc", "tiny_mc.jsonl"))][:12]
    texts = lm.generate_until([request(f"Question: {d['question']}\nAnswer:", {"until": ["\n", "."], "max_gen_toks": 8})
                               for d in docs])
    right = sum(t.strip().lower() == d["choices"][d["answer"]].lower() for t, d in zip(texts, docs))
    assert run["results"]["tiny_gen"]["exact_match"]["value"] == right / 12


def test_registered_under_one_name(harness, gpt2_vocab_run):
    from lm_eval.api.registry import get_model
    cls = get_model("lssa-gpt")
    assert cls is harness.LssaGPT
    # how lm-eval's own CLI would build it: --model lssa-gpt --model_args checkpoint=...,max_length=64
    lm = cls.create_from_arg_string(f"checkpoint={gpt2_vocab_run},max_length=64,attention=lssa",
                                    {"batch_size": 4, "device": "cpu", "max_batch_size": None})
    assert (lm.max_length, lm.batch_size, lm.model.config.attention) == (64, 4, "lssa")


def test_tiny_task_end_to_end(harness, gpt2_vocab_run, tmp_path, capsys):
    out = tmp_path / "tiny.json"
    report = eval_downstream.main([gpt2_vocab_run, "--include_path", TASKS, "--tasks", "tiny_mc", "--device", "cpu",
                                   "--out", str(out)])
    run = report["runs"][0]
    assert run["samples"] == {"tiny_mc": 40} and run["train_context"] == run["max_length"] == 32
    acc, acc_norm = run["results"]["tiny_mc"]["acc"], run["results"]["tiny_mc"]["acc_norm"]
    # lm-eval's accuracy is the argmax of our log-likelihoods over each question's choices
    lm = harness.LssaGPT(gpt2_vocab_run, device="cpu")
    docs = [json.loads(line) for line in open(os.path.join(TASKS, "tiny_mc", "tiny_mc.jsonl"))]
    results = lm.loglikelihood([request(f"Question: {doc['question']}\nAnswer:", f" {choice}")
                                for doc in docs for choice in doc["choices"]])
    right = right_norm = 0
    for n, doc in enumerate(docs):
        lls = [ll for ll, _ in results[4 * n:4 * n + 4]]
        right += max(range(4), key=lambda i: lls[i]) == doc["answer"]
        right_norm += max(range(4), key=lambda i: lls[i] / len(f" {doc['choices'][i]}".encode())) == doc["answer"]
    assert acc["value"] == right / 40 and acc_norm["value"] == right_norm / 40
    assert acc["stderr"] == pytest.approx((acc["value"] * (1 - acc["value"]) / 39) ** 0.5)
    assert {"created", "command", "code", "hardware", "lm_eval", "tasks", "runs"} <= set(report)
    assert json.load(open(out)) == json.loads(json.dumps(report))
    rows = list(csv.DictReader(open(tmp_path / "tiny.csv")))
    assert [(r["task"], r["metric"], r["samples"]) for r in rows] == [("tiny_mc", "acc", "40"),
                                                                      ("tiny_mc", "acc_norm", "40")]
    table = capsys.readouterr().out
    assert f"{acc['value']:.4f} ± {acc['stderr']:.4f}" in table and "tiny_mc" in table
    # the attention override is recorded, as eval_length.py records it
    report = eval_downstream.main([gpt2_vocab_run, "--include_path", TASKS, "--tasks", "tiny_mc", "--device", "cpu",
                                   "--attention", "lssar", "--p", "3", "--limit", "8"])
    run = report["runs"][0]
    assert run["overrides"] == {"attention": "lssar", "reweight_p": 3.0} and run["samples"] == {"tiny_mc": 8}


def test_bad_input_is_one_clear_line(harness):
    # (an unknown task name is reported too, but checking that indexes lm-eval's 15,000 task configs: slow)
    with pytest.raises(FileNotFoundError, match="--include_path /nonexistent is not a folder"):
        eval_downstream.task_manager(["tiny_mc"], "/nonexistent")


def test_without_lm_eval_the_command_says_how_to_install(gpt2_vocab_run):
    code = ("import runpy, sys; sys.modules['lm_eval'] = None; "  # None in sys.modules: import fails
            f"sys.argv = ['eval_downstream.py', {gpt2_vocab_run!r}, '--tasks', 'arc_easy']; "
            "runpy.run_path('eval_downstream.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "error: eval_downstream.py needs lm-eval, an optional dependency: " \
                          "pip install -r requirements-eval.txt\n"


def test_a_window_relative_to_the_training_context(harness, gpt2_vocab_run):
    # the paper recipe's --max_length 16x: 16 x this checkpoint's 32-token training context
    assert harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length="16x").max_length == 512
    assert harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length="2x").max_length == 64
    with pytest.raises(ValueError, match=r"max_length 544 is outside 1\.\.512"):
        harness.LssaGPT(gpt2_vocab_run, device="cpu", max_length="17x")
    assert eval_downstream.parse_args(["run", "--max_length", "16x"]).max_length == "16x"
    assert eval_downstream.parse_args(["run", "--max_length", "300"]).max_length == 300
    for bad in ("0x", "x", "1.5x", "-2x"):
        with pytest.raises(SystemExit):
            eval_downstream.parse_args(["run", "--max_length", bad])


# ----------------------------------------------------------------- eval_downstream.py's own parts, in-process
# (the end-to-end tests above run lm-eval on a checkpoint: seconds each; these stand in for lm-eval and the model)

def test_limit_is_a_count_or_a_fraction():
    assert [eval_downstream.limit_arg(t) for t in ("5", "1", "2.0", "0.25", "0.999")] == [5, 1, 2, 0.25, 0.999]
    assert type(eval_downstream.limit_arg("2.0")) is int and type(eval_downstream.limit_arg("1")) is int
    for bad in ("0", "0.0", "-1", "1.5", "3.25"):
        with pytest.raises(eval_downstream.argparse.ArgumentTypeError) as e:
            eval_downstream.limit_arg(bad)
        assert str(e.value) == f"must be a whole number of examples or a fraction in (0, 1), got {bad}"


def test_a_window_is_tokens_or_a_multiple_of_the_training_context():
    assert [eval_downstream.window(t) for t in ("1x", "16x", "1", "300")] == ["1x", "16x", 1, 300]
    for bad in ("0x", "-2x", "x", "1.5x", "ax"):
        with pytest.raises(eval_downstream.argparse.ArgumentTypeError) as e:
            eval_downstream.window(bad)
        assert str(e.value) == f"expected a positive integer followed by x (16x), got {bad!r}"
    with pytest.raises(eval_downstream.argparse.ArgumentTypeError, match="must be a positive integer, got 0"):
        eval_downstream.window("0")


def test_command_line_defaults_and_stand_ins(capsys):
    args = eval_downstream.parse_args(["a", "b"])
    assert vars(args) == {"checkpoints": ["a", "b"], "tasks": "hellaswag,arc_easy,arc_challenge,piqa,winogrande,"
                          "lambada_openai", "include_path": None, "stand_in": {}, "num_fewshot": None, "limit": None,
                          "batch_size": 16, "max_length": None, "attention": None, "p": None,
                          "attention_backend": None, "device": "auto", "out": None}
    args = eval_downstream.parse_args(["a", "--tasks", "mmlu", "--include_path", "t", "--num_fewshot", "5",
                                       "--stand_in", "mmlu=tiny_mc", "--stand_in", "scrolls=tiny_gen",
                                       "--limit", "0.5", "--batch_size", "3", "--max_length", "2x", "--attention",
                                       "lssar", "--p", "7", "--attention_backend", "reference", "--device", "cpu",
                                       "--out", "r.json"])
    assert vars(args) == {"checkpoints": ["a"], "tasks": "mmlu", "include_path": "t",
                          "stand_in": {"mmlu": "tiny_mc", "scrolls": "tiny_gen"}, "num_fewshot": 5, "limit": 0.5,
                          "batch_size": 3, "max_length": "2x", "attention": "lssar", "p": 7.0,
                          "attention_backend": "reference", "device": "cpu", "out": "r.json"}
    for bad in ("mmlu", "mmlu=a=b", "=tiny_mc", "mmlu="):
        with pytest.raises(SystemExit):
            eval_downstream.parse_args(["a", "--stand_in", "x=y", "--stand_in", bad])
        assert capsys.readouterr().err.endswith("error: --stand_in takes TASK=LOCAL (e.g. scrolls_summscreenfd="
                                                f"tiny_gen), got {bad!r}\n")
    assert eval_downstream.parse_args(["a", "--max_length", "300"]).max_length == 300
    for bad in (["a", "--batch_size", "0"], ["a", "--attention", "nope"], ["a", "--limit", "0"], [],
                ["a", "--max_length", "0x"], ["a", "--num_fewshot", "2.5"], ["a", "--p", "x"]):
        with pytest.raises(SystemExit):
            eval_downstream.parse_args(bad)


def test_without_lm_eval_one_line_says_how_to_install(harness, monkeypatch):
    import lm_eval
    assert eval_downstream.import_lm_eval() is lm_eval
    monkeypatch.setitem(sys.modules, "lm_eval", None)   # None in sys.modules: import fails
    with pytest.raises(SystemExit) as e:
        eval_downstream.import_lm_eval()
    assert str(e.value) == "error: eval_downstream.py needs lm-eval, an optional dependency: " \
                           "pip install -r requirements-eval.txt"
    assert e.value.__cause__ is None and e.value.__suppress_context__


class FakeTaskManager:
    """lm-eval's TaskManager stood in for: its own tasks, and those of an include_path."""
    made = []

    def __init__(self, include_path=None, include_defaults=True):
        FakeTaskManager.made.append({"include_path": include_path, "include_defaults": include_defaults})
        self.all_tasks = (["tiny_mc", "tiny_gen"] if include_path else []) + \
                         (["hellaswag", "arc_easy"] if include_defaults else [])


def test_task_manager_indexes_lm_evals_own_tasks_only_when_needed(harness, monkeypatch, tmp_path):
    import lm_eval.tasks
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeTaskManager)
    made = FakeTaskManager.made
    made.clear()
    local = eval_downstream.task_manager(["tiny_mc", "tiny_gen"], str(tmp_path))
    assert local.all_tasks == ["tiny_mc", "tiny_gen"] and made == [{"include_path": str(tmp_path),
                                                                   "include_defaults": False}]
    made.clear()
    both = eval_downstream.task_manager(["tiny_mc", "arc_easy"], str(tmp_path))
    assert "arc_easy" in both.all_tasks and made == [{"include_path": str(tmp_path), "include_defaults": False},
                                                     {"include_path": str(tmp_path), "include_defaults": True}]
    made.clear()
    assert eval_downstream.task_manager(["hellaswag", "arc_*", "mmlu_[ab]", "x?"], None).all_tasks == \
        ["hellaswag", "arc_easy"] and made == [{"include_path": None, "include_defaults": True}]
    with pytest.raises(ValueError) as e:
        eval_downstream.task_manager(["hellaswag", "tiny_mc", "nope", "arc_easy", "XNLI"], None)
    assert str(e.value) == ("unknown lm-eval task(s) tiny_mc, nope, XNLI; `python -m lm_eval ls tasks` lists them, and "
                            "--include_path adds a folder of your own")
    (tmp_path / "file.yaml").write_text("")
    with pytest.raises(FileNotFoundError) as e:
        eval_downstream.task_manager(["tiny_mc"], str(tmp_path / "file.yaml"))
    assert str(e.value) == f"--include_path {tmp_path / 'file.yaml'} is not a folder of task YAMLs"


def test_metrics_of_lm_evals_results():
    result = {"alias": "tiny", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.25,
              "acc_norm_stderr,none": "N/A", "exact_match,strict-match": 0.75, "exact_match_stderr,strict-match": 0,
              "bleu,none": 3.5, "samples": 4, "f1,a,b": 0.125, "f1_stderr,a,b": 0.5}   # a filter's name with a comma
    assert eval_downstream.metrics_of(result) == {"f1,a,b": {"value": 0.125, "stderr": 0.5},
        "acc": {"value": 0.5, "stderr": 0.1}, "acc_norm": {"value": 0.25, "stderr": None},
        "exact_match,strict-match": {"value": 0.75, "stderr": 0}, "bleu": {"value": 3.5, "stderr": None}}


def test_stand_ins_are_filed_under_the_task_they_stand_in_for():
    by_task = {"tiny_mc": 1, "tiny_gen": 2, "piqa": 3}
    # tiny_mc stands in for mmlu and was asked for too; tiny_gen only stands in (for scrolls)
    assert eval_downstream.filed_under(["mmlu", "scrolls", "tiny_mc", "piqa"],
                                       {"mmlu": "tiny_mc", "scrolls": "tiny_gen", "gone": "tiny_x"}, by_task) == \
        {"tiny_mc": 1, "piqa": 3, "mmlu": 1, "scrolls": 2}
    assert eval_downstream.filed_under(["piqa"], {}, {"piqa": 3}) == {"piqa": 3}


def test_the_table_and_the_csv(tmp_path, capsys):
    report = {"runs": [{"label": "demo [lssar p=15]", "run": "demo", "trained_attention": "lssa",
                        "attention": "lssar", "reweight_p": 15.0, "step": 2, "train_context": 32, "max_length": 64,
                        "samples": {"tiny_mc": 40},
                        "results": {"tiny_mc": {"acc": {"value": 0.5, "stderr": 0.0801},
                                                "acc_norm": {"value": 0.25, "stderr": None}},
                                    "tiny_gen": {"exact_match": {"value": 1.0, "stderr": 0.0}}}}]}
    eval_downstream.print_table(report)
    head = "run [attention]                  task                  n      acc ± stderr  acc_norm ± stderr"
    assert capsys.readouterr().out.splitlines() == [
        head, "-" * len(head),
        "demo [lssar p=15]                tiny_mc              40   0.5000 ± 0.0801             0.2500",
        "demo [lssar p=15]                tiny_gen                                -                  -"]
    eval_downstream.write_outputs(report, str(tmp_path / "out" / "r.json"))
    assert json.load(open(tmp_path / "out" / "r.json")) == report
    assert (tmp_path / "out" / "r.csv").read_bytes().decode() == (
        "run,trained_attention,attention,reweight_p,step,train_context,max_length,task,samples,metric,value,stderr\r\n"
        "demo,lssa,lssar,15.0,2,32,64,tiny_mc,40,acc,0.5,0.0801\r\n"
        "demo,lssa,lssar,15.0,2,32,64,tiny_mc,40,acc_norm,0.25,\r\n"
        "demo,lssa,lssar,15.0,2,32,64,tiny_gen,,exact_match,1.0,0.0\r\n")
    assert capsys.readouterr().out.endswith(f"wrote {tmp_path / 'out' / 'r.csv'}\n")


class FakeLM:
    """harness.LssaGPT stood in for: what main reads of it, and the arguments it was made with."""
    made = []

    def __init__(self, path, **kwargs):
        FakeLM.made.append((path, kwargs))
        run = os.path.join(path, "ckpt_000007.pt")
        self.ckpt = {"path": run, "step": 7, "model_config": {"attention": "lssa", "n_layer": 1}}
        self.model = SimpleNamespace(config=SimpleNamespace(attention="lssar", reweight_p=3.0))
        self.train_context, self.max_length, self.overrides = 32, 64, {"attention": "lssar"}
        self.tok = SimpleNamespace(name="bytes")


def test_main_wires_arguments_lm_eval_and_the_report(harness, monkeypatch, tmp_path, capsys):
    import lm_eval
    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text('{"step": 5, "loss": 2.5}\n{"step": 7, "val_loss": 2.75}\n'
                                                       '{"step": 9, "loss": 1.0}\n')
        runs.append(str(tmp_path / name))
    evaluated = []

    def simple_evaluate(**kwargs):
        evaluated.append(kwargs)
        return {"results": {"tiny_mc": {"acc,none": 0.5, "acc_stderr,none": 0.1}, "piqa": {"acc,none": 0.75}},
                "n-samples": {"tiny_mc": {"original": 40, "effective": 8}, "piqa": {"original": 9, "effective": 9}},
                "n-shot": {"tiny_mc": 0, "piqa": 0}, "versions": {"tiny_mc": 1.0, "piqa": 2.0}}
    clock = iter([100.0, 101.23456, 200.0, 200.5])
    freed, managers = [], []
    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    monkeypatch.setattr(harness, "LssaGPT", FakeLM)
    monkeypatch.setattr(eval_downstream, "task_manager", lambda tasks, path: managers.append((tasks, path)) or "M")
    monkeypatch.setattr(eval_downstream, "keep_freed_memory", lambda: freed.append(True))
    monkeypatch.setattr(eval_downstream.time, "time", lambda: next(clock))
    FakeLM.made.clear()
    argv = [*runs, "--tasks", " mmlu, ,tiny_mc,piqa,", "--stand_in", "mmlu=tiny_mc", "--stand_in", "other=x",
            "--include_path", "tasks", "--num_fewshot", "2", "--limit", "8", "--batch_size", "4", "--max_length",
            "2x", "--attention", "lssar", "--p", "3", "--attention_backend", "reference", "--device", "cpu",
            "--out", str(tmp_path / "r.json")]
    report = eval_downstream.main(argv)
    assert FakeLM.made == [(r, {"attention": "lssar", "p": 3.0, "attention_backend": "reference", "max_length": "2x",
                                "batch_size": 4, "device": "cpu"}) for r in runs]
    # the stand-in runs once for itself and for mmlu; a stand-in for a task not asked for is left out
    assert managers == [(["tiny_mc", "piqa"], "tasks")] and freed == [True]
    assert evaluated == [{"model": evaluated[i]["model"], "tasks": ["tiny_mc", "piqa"], "num_fewshot": 2, "limit": 8,
                          "task_manager": "M", "log_samples": False} for i in range(2)]
    assert [type(e["model"]) for e in evaluated] == [FakeLM, FakeLM]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", report.pop("created"))
    assert report.pop("command") == "python eval_downstream.py " + " ".join(argv)
    assert report.pop("code") == eval_downstream.code_version() and report.pop("hardware")["device"] == "cpu"
    assert report.pop("lm_eval") == lm_eval.__version__
    first = report["runs"][0]
    assert report == {"tasks": ["mmlu", "tiny_mc", "piqa"], "stand_ins": {"mmlu": "tiny_mc"}, "num_fewshot": 2,
                      "limit": 8, "runs": report["runs"]}
    assert first == {
        "checkpoint": os.path.join(runs[0], "ckpt_000007.pt"), "run": "first", "step": 7, "label": "first [lssar p=3]",
        "stand_ins": {"mmlu": "tiny_mc"}, "trained_attention": "lssa", "attention": "lssar", "reweight_p": 3.0,
        "overrides": {"attention": "lssar"}, "train_context": 32, "max_length": 64, "tokenizer": "bytes",
        "results": {"tiny_mc": {"acc": {"value": 0.5, "stderr": 0.1}}, "piqa": {"acc": {"value": 0.75, "stderr": None}},
                    "mmlu": {"acc": {"value": 0.5, "stderr": 0.1}}},
        "samples": {"tiny_mc": 8, "piqa": 9, "mmlu": 8}, "n_shot": {"tiny_mc": 0, "piqa": 0},
        "versions": {"tiny_mc": 1.0, "piqa": 2.0}, "time_s": 1.23, "training": {"train_loss": 2.5, "val_loss": 2.75},
        "model_config": {"attention": "lssa", "n_layer": 1}}
    assert report["runs"][1]["run"] == "second" and report["runs"][1]["time_s"] == 0.5
    out = capsys.readouterr().out
    assert (f"{runs[0]}/ckpt_000007.pt: trained with lssa at context 32, step 7; evaluating lssar p=3 on mmlu, "
            "tiny_mc, piqa with windows of 64 tokens\n") in out
    assert "first [lssar p=3]                mmlu                  8   0.5000 ± 0.1000                  -" in out
    assert json.load(open(tmp_path / "r.json"))["runs"][1]["run"] == "second" and (tmp_path / "r.csv").exists()


def test_main_on_a_gpu_keeps_its_memory_and_writes_nothing_without_out(harness, monkeypatch, tmp_path):
    import lm_eval
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: {"results": {}, "n-samples": {}, "n-shot": {},
                                                                  "versions": {}})
    monkeypatch.setattr(harness, "LssaGPT", FakeLM)
    monkeypatch.setattr(eval_downstream, "task_manager", lambda tasks, path: None)
    monkeypatch.setattr(eval_downstream, "pick_device", lambda d: "cuda:1" if d == "auto" else "?")
    monkeypatch.setattr(eval_downstream, "hardware", lambda d: {"device": d})
    freed = []
    monkeypatch.setattr(eval_downstream, "keep_freed_memory", lambda: freed.append(True))
    monkeypatch.chdir(tmp_path)
    report = eval_downstream.main([str(tmp_path), "--tasks", "tiny_mc"])
    assert freed == [] and report["hardware"] == {"device": "cuda:1"} and report["stand_ins"] == {}
    assert FakeLM.made[-1][1]["device"] == "cuda:1" and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"^--tasks is empty; give comma-separated lm-eval task names$"):
        eval_downstream.main([str(tmp_path), "--tasks", " , ,"])


def test_help_shows_the_usage_every_options_help_and_the_module_docstring(capsys, monkeypatch):
    flat = help_text(eval_downstream.parse_args, eval_downstream, monkeypatch, capsys)
    for text in (
            "[--stand_in TASK=LOCAL]", "checkpoints run directories or checkpoint files",
            "--tasks TASKS comma-separated lm-eval tasks (default hellaswag,arc_easy,arc_challenge,piqa,winogrande,"
            "lambada_openai)",
            "--include_path INCLUDE_PATH a folder of extra task YAMLs (e.g. tests/lm_eval_tasks)",
            "--stand_in TASK=LOCAL run the local task LOCAL where TASK is asked for, its results filed under TASK and "
            "the substitution recorded (a test of a recipe whose real data cannot be fetched: "
            "scrolls_summscreenfd=tiny_gen); repeatable",
            "--num_fewshot NUM_FEWSHOT examples in the prompt (default: each task's, zero for most)",
            "--limit LIMIT examples per task (or a fraction), for quick checks",
            "--batch_size BATCH_SIZE requests per forward pass (default 16)",
            "--max_length MAX_LENGTH tokens per window, or '<k>x' for k times each checkpoint's training context (the "
            "paper recipe's 16x); longer contexts lose their left end (default: the training context; at most 16x it)",
            "} evaluate with this attention type --p P",
            "--p P the re-weighting power p (with a re-weighted --attention; default: the checkpoint's reweight_p)",
            "--attention_backend ATTENTION_BACKEND auto | reference | kernel", "--device DEVICE",
            "--out OUT JSON path (a .csv is written beside it)"):
        assert text in flat, text
