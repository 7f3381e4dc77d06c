"""harness.py (our checkpoints as an lm-eval model type) and eval_downstream.py, offline.

lm-eval is optional (requirements-eval.txt): these tests skip without it on a developer's
machine, and fail without it in CI (CI=true), where scripts/test.sh installs it."""
import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import eval_downstream
from checkpoint import load_model
from data.tokenizer import EOT, ByteTokenizer, get_encoding
from helpers import optional_module

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
