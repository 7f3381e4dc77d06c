"""export_hf.py and hf_lssa.py: our checkpoints as transformers models, our attention inside any.

transformers is optional (requirements-hf.txt): these tests skip without it on a developer's
machine, and fail without it in CI (CI=true), where scripts/test.sh installs it. The models are
random (no training; scripts/hf_logit_diff.py builds them) with weights large enough that the
attention types differ sharply.
    python -m pytest tests/test_hf.py -k fresh -s     # prints the logit differences per type
"""
import importlib
import inspect
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import eval_downstream
import export_hf
from attention import ATTENTION_TYPES, reference_attention
from checkpoint import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from hf_logit_diff import all_logits, random_checkpoint  # noqa: E402
from helpers import help_text, optional_module  # noqa: E402

try:   # loaded once at collection rather than by each test process: mutation testing forks one per mutant from
    for _name in ("transformers", "tokenizers", "safetensors.torch"):   # the collected process (seconds each)
        importlib.import_module(_name)
except ImportError:   # optional: the transformers fixture below skips (or fails in CI) without them
    pass

TASKS = os.path.join(ROOT, "tests", "lm_eval_tasks")
CONTEXT = 32


@pytest.fixture(scope="module")
def transformers():
    return optional_module("transformers", export_hf.INSTALL)


@pytest.fixture(scope="module")
def exports(transformers, tmp_path_factory):
    """{attention type: (run directory, exported folder)}; the softmax one without biases."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for kind in ATTENTION_TYPES:
        run = random_checkpoint(str(root / "runs" / kind), kind, CONTEXT, bias=kind != "softmax")
        out[kind] = (run, export_hf.export(run, str(root / "export" / kind)))
    return out


@pytest.fixture(scope="module")
def gpt2_export(transformers, gpt2_vocab_run, tmp_path_factory):
    return export_hf.export(gpt2_vocab_run, str(tmp_path_factory.mktemp("hf-gpt2") / "lssar"))


def load_hf(folder, **kwargs):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()


# the fresh process: the folder alone (no repository on sys.path), as a user would load it
FRESH = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
exports, inputs, out = json.loads(sys.argv[1]), torch.load(sys.argv[2]), {}
for kind, folder in exports.items():
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        out[kind] = [model(x).logits for x in inputs]
try:
    import attention  # the repository's must not be importable: the folder's own code ran
    out["repository_importable"] = True
except ImportError:
    out["repository_importable"] = False
try:
    AutoModelForCausalLM.from_pretrained(exports["lssar"])
    out["without_trust"] = "loaded"
except Exception as e:
    out["without_trust"] = f"{type(e).__name__}: {e}"
torch.save(out, sys.argv[3])
"""


def test_fresh_process_logits_equal_ours_at_1x_and_16x(exports, tmp_path):
    torch.manual_seed(1)
    inputs = [torch.randint(0, 256, (2, CONTEXT)), torch.randint(0, 256, (1, 16 * CONTEXT))]
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    folders = {kind: folder for kind, (_, folder) in exports.items()}
    proc = subprocess.run([sys.executable, "-c", FRESH, json.dumps(folders), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["repository_importable"] is False
    assert "trust_remote_code" in out["without_trust"]   # fails, never falls back to stock softmax
    print("\nmax |logits(transformers) - logits(GPT.forward)|, fp32, CPU")
    for kind, (run, _) in exports.items():
        model, _ = load_model(run)
        diffs = [(theirs - all_logits(model, x)).abs().max().item() for x, theirs in zip(inputs, out[kind])]
        print(f"  {kind:20s} 1x ({CONTEXT}): {diffs[0]:.2e}   16x ({16 * CONTEXT}): {diffs[1]:.2e}")
        assert max(diffs) < 1e-5, (kind, diffs)


def test_lssar_export_never_runs_as_softmax(exports, tmp_path):
    run, folder = exports["lssar"]
    ours, _ = load_model(run)
    softmax, _ = load_model(run, attention="softmax")
    x = torch.randint(0, 256, (1, 2 * CONTEXT))
    for asked in (None, "sdpa", "eager"):
        model = load_hf(folder, **({"attn_implementation": asked} if asked else {}))
        assert model.config._attn_implementation == "lssar"
        with torch.no_grad():
            logits = model(x).logits
        assert (logits - all_logits(ours, x)).abs().max() < 1e-5
        assert (logits - all_logits(softmax, x)).abs().max() > 0.1
    model.save_pretrained(tmp_path / "resaved")   # after fine-tuning, say: the code and the type go along
    assert {"modeling_lssa_gpt.py", "attention.py"} <= set(os.listdir(tmp_path / "resaved"))
    with torch.no_grad():
        assert (load_hf(tmp_path / "resaved")(x).logits - all_logits(ours, x)).abs().max() < 1e-5


def left_pad(rows, pad):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r), 1
    return ids, mask


@pytest.mark.parametrize("kind", ["lssar", "lssa", "softmax"])
def test_left_padded_batch_and_cached_greedy_generate_equal_ours(exports, kind):
    run, folder = exports[kind]
    ours, _ = load_model(run)
    model = load_hf(folder)
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(1, 256, (n,), generator=g).tolist() for n in (3, 11, 20)]
    ids, mask = left_pad(rows, pad=0)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
    for i, r in enumerate(rows):
        alone = all_logits(ours, torch.tensor([r]))[0]
        assert (padded[i, -len(r):] - alone).abs().max() < 1e-5
    new = 2 * CONTEXT   # past the training context
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                   eos_token_id=None)[:, ids.size(1):]
    assert generated.shape == (3, new)
    for i, r in enumerate(rows):
        expected = ours.generate(torch.tensor([r]), new, temperature=0)[0, len(r):]
        assert generated[i].tolist() == expected.tolist()


def test_tokenizers_give_our_ids(exports, gpt2_export):
    from transformers import AutoTokenizer
    from data.tokenizer import ByteTokenizer, GPT2Tokenizer
    ours = ByteTokenizer()
    tok = AutoTokenizer.from_pretrained(exports["lssar"][1], trust_remote_code=True)
    texts = ["plain", "a\x00b\x00", "Ā is U+0100, ByteLevel's stand-in for NUL", "naïve 日本 🙂", " \n\t ", ""]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
        assert tok(text)["input_ids"] == [ours.eot] + ours.encode(text)   # the document separator first
    for ids in ([0, 104, 105, 0], [255, 254, 104], [226, 130], [104, 226, 130, 172, 0xC0, 0xAF, 105]):
        assert tok.decode(ids) == ours.decode(ids)   # invalid UTF-8 becomes U+FFFD as in ours
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (0, 0, 0)
    ours = GPT2Tokenizer()
    tok = AutoTokenizer.from_pretrained(gpt2_export, trust_remote_code=True)
    texts = ["Hello world", "  leading spaces and trailing  ", "It's 3.14159 o'clock; they'll've",
             "naïve café 日本語 🙂\n\nnew\tlines", "a" * 300, "don't\r\n"]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
        assert tok(text)["input_ids"] == [ours.eot] + ours.encode(text)
        assert tok.decode(ours.encode(text)) == text
    assert (tok.eos_token_id, tok.bos_token_id) == (ours.eot, ours.eot)


def test_generation_config_and_model_card(exports):
    run, folder = exports["lssa"]
    gen = json.load(open(os.path.join(folder, "generation_config.json")))
    assert gen["eos_token_id"] == 0 and gen["do_sample"] and gen["temperature"] == 0.8 and gen["top_k"] == 200
    card = open(os.path.join(folder, "README.md")).read()
    assert "lssa attention" in card and "trust_remote_code=True" in card and '"tokenizer": "bytes"' in card
    assert set(os.listdir(folder)) == {"model.safetensors", "config.json", "generation_config.json", "README.md",
                                       "tokenizer.json", "tokenizer_config.json", "modeling_lssa_gpt.py",
                                       "attention.py"}


def test_model_card_has_the_runs_losses_and_sweep(transformers, gpt2_vocab_run, tmp_path):
    from checkpoint import load_checkpoint
    ckpt = load_checkpoint(gpt2_vocab_run)
    losses = [{"length": 32, "loss": 10.5}, {"length": 512, "loss": 11.25}]
    sweep = {"runs": [{"run": "lssar", "step": ckpt["step"], "label": "lssar [lssar p=15]", "train_context": 32,
                       "tokens_per_length": 64, "results": losses}]}
    json.dump(sweep, open(tmp_path / "sweep.json", "w"))
    folder = export_hf.export(gpt2_vocab_run, str(tmp_path / "card"), sweep=str(tmp_path / "sweep.json"))
    card = open(os.path.join(folder, "README.md")).read()
    val_loss = [json.loads(line) for line in open(os.path.join(gpt2_vocab_run, "metrics.jsonl"))][-1]["val_loss"]
    assert f"val_loss {val_loss:.4f}" in card
    assert "| 32 (1x) | 10.5000 |" in card and "| 512 (16x) | 11.2500 |" in card
    sweep["runs"][0]["step"] += 1
    json.dump(sweep, open(tmp_path / "other.json", "w"))
    with pytest.raises(ValueError, match="has no length sweep of lssar at step"):
        export_hf.export(gpt2_vocab_run, str(tmp_path / "card2"), sweep=str(tmp_path / "other.json"))


def test_export_errors_and_portable_softmax(exports, tmp_path):
    from transformers import AutoModelForCausalLM
    with pytest.raises(ValueError, match="softmax attention only; this checkpoint uses lssar"):
        export_hf.export(exports["lssar"][0], str(tmp_path / "p"), portable=True)
    with pytest.raises(FileExistsError, match="exists; remove it or choose another folder"):
        export_hf.export(exports["lssar"][0], exports["lssar"][1])
    run = exports["softmax"][0]
    folder = export_hf.export(run, str(tmp_path / "portable"), portable=True)
    assert "modeling_lssa_gpt.py" not in os.listdir(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()   # stock transformers, no code of ours
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    ours, _ = load_model(run)
    x = torch.randint(0, 256, (1, 16 * CONTEXT), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        diff = (model(x).logits - all_logits(ours, x)).abs()
    # transformers forms RoPE angles in fp32: close, not equal (docs/huggingface.md)
    print(f"\nportable softmax export: max |logit difference| {diff[0, :CONTEXT].max():.1e} within the training "
          f"context, {diff.max():.1e} up to 16x")
    assert 0 < diff[0, :CONTEXT].max() < 1e-3 and diff.max() < 1e-2


# ----------------------------------------------------------------- the attention function alone
def test_attention_function_counts_visible_keys_from_the_mask(transformers):
    import hf_lssa
    torch.manual_seed(3)
    B, H, T, D = 2, 4, 12, 16
    q, k, v = (torch.randn(B, H, T, D) * 3 for _ in range(3))
    pad = [0, 5]   # row 1 left-padded by 5
    visible = torch.ones(B, 1, T, T).tril().bool()
    for b, n in enumerate(pad):
        visible[b, :, :, :n] = False
    for kind in ATTENTION_TYPES:
        y, weights = hf_lssa.attention_forward(kind, None, q, k, v, visible)
        assert weights is None and y.shape == (B, T, H, D)
        for b, n in enumerate(pad):   # the real tokens alone, as a causal sequence
            alone = reference_attention(q[b:b + 1, :, n:], k[b:b + 1, :, n:], v[b:b + 1, :, n:], kind,
                                        head_scale=torch.ones(H))
            assert torch.allclose(y[b, n:], alone[0].transpose(0, 1), atol=1e-5), kind
        assert torch.isfinite(y).all() and (y[1, :5] == 0).all()   # fully padded rows: zeros, not NaN
        # transformers' eager masks are additive floats: 0 where visible, the dtype's minimum elsewhere
        additive = torch.zeros(B, 1, T, T).masked_fill(~visible, torch.finfo(torch.float32).min)
        assert torch.equal(hf_lssa.attention_forward(kind, None, q, k, v, additive)[0], y), kind
        # a cached decoding step: one query against T keys, no mask (transformers skips it)
        step, _ = hf_lssa.attention_forward(kind, None, q[:, :, -1:], k, v, None)
        full, _ = hf_lssa.attention_forward(kind, None, q, k, v, None)
        assert torch.allclose(step[:, 0], full[:, -1], atol=1e-5), kind


def test_attention_function_grouped_query_heads(transformers):
    import hf_lssa
    torch.manual_seed(4)
    for T in (2, 4, 10):   # as many positions as k/v heads, as query heads, or neither: heads are dim 1
        q = torch.randn(1, 4, T, 8) * 3
        k, v = torch.randn(1, 2, T, 8) * 3, torch.randn(1, 2, T, 8)
        y, _ = hf_lssa.attention_forward("lssar", None, q, k, v, None)
        for h in range(4):   # query heads 0, 1 share k/v head 0; heads 2, 3 share head 1
            one = reference_attention(q[:, h:h + 1], k[:, h // 2:h // 2 + 1], v[:, h // 2:h // 2 + 1], "lssar")
            assert torch.allclose(y[:, :, h], one[:, 0], atol=1e-6)


def test_bound_attention_function_passes_everything_through(transformers):
    """_bind(kind) is what transformers calls by the type's name: the type, the module's p, the
    mask, q/k/v and transformers' scaling all reach the attention (float64 sums by hand)."""
    import hf_lssa
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 2, 6, 16, dtype=torch.float64) for _ in range(3))
    visible = torch.ones(1, 1, 6, 6).tril().bool()
    visible[..., 0] = False   # a left-padded first key
    visible[..., 0, 0] = True
    module = SimpleNamespace(config=SimpleNamespace(reweight_p=3.0))
    softmax = hf_lssa._bind("softmax")
    assert softmax.__name__ == "softmax_attention_forward"   # as tracebacks and transformers' registry show it
    y, weights = softmax(module, q, k, v, visible, scaling=0.5, dropout=0.0)
    scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~visible, float("-inf"))   # transformers' 0.5, not 1/sqrt(16)
    assert weights is None and torch.allclose(y, (scores.softmax(-1) @ v).transpose(1, 2), atol=1e-12)
    lssar = hf_lssa._bind("lssar")
    y, _ = lssar(module, q, k, v, visible)
    expected = reference_attention(q, k, v, "lssar", 3.0, visible=visible)   # p from the module's config
    assert torch.allclose(y, expected.transpose(1, 2), atol=1e-12)
    assert not torch.allclose(y, reference_attention(q, k, v, "lssar", 15.0, visible=visible).transpose(1, 2))
    with pytest.raises(ValueError, match="^lssar attention has no attention dropout: set the model's "
                                         "attention_dropout to 0$"):
        lssar(module, q, k, v, visible, dropout=0.1)
    # lssa's queries are QK-normed: transformers' scaling is ignored, bit for bit (scaling the query
    # by 0.3 * 4 before the norm would round differently)
    assert torch.equal(lssar(module, q, k, v, visible, scaling=0.3)[0], y)
    # transformers' default, 1/sqrt(d), leaves the query as it is: with d = 8, 8 ** -0.5 * sqrt(8) is
    # 1 + 2e-16 in float64, so multiplying by it would show in the last bits
    q8, k8, v8 = q[..., :8], k[..., :8], v[..., :8]
    assert torch.equal(softmax(module, q8, k8, v8, visible, scaling=8 ** -0.5)[0],
                       softmax(module, q8, k8, v8, visible)[0])


def test_float64_rope_of_the_model_class(transformers):
    """LssaGPTForCausalLM's RoPE: angles p * base^(-2j/head_dim) formed in float64 (math, by hand),
    whatever the model's dtype; base from the config."""
    import hf_lssa
    config = hf_lssa.LssaGPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                   intermediate_size=64, rotary_pct=1.0, rope_base=500.0, attention="lssar")
    model = hf_lssa.LssaGPTForCausalLM(config)
    rotary = model.gpt_neox.rotary_emb
    assert isinstance(rotary, hf_lssa.Float64Rotary) and model.config._attn_implementation == "lssar"
    positions = [0, 1, 7, 16383]
    angles = [[p * 500.0 ** (-2 * j / 8) for j in range(4)] * 2 for p in positions]   # head_dim 8, rotate-half
    for dtype in (torch.float32, torch.bfloat16):
        cos, sin = rotary(torch.zeros(1, dtype=dtype), torch.tensor([positions]))
        assert cos.dtype == sin.dtype == dtype and cos.shape == (1, 4, 8)
        expect_cos = torch.tensor([[[math.cos(a) for a in row] for row in angles]]).to(dtype)
        expect_sin = torch.tensor([[[math.sin(a) for a in row] for row in angles]]).to(dtype)
        # fp32 angles would be ~1e-3 off at position 16383
        assert torch.allclose(cos.float(), expect_cos.float(), atol=1e-6, rtol=0)
        assert torch.allclose(sin.float(), expect_sin.float(), atol=1e-6, rtol=0)


def tiny_llama(attn_implementation, hidden_size=32):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(5)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 1 / math.sqrt(p.size(1)))
    return model


def test_llama_with_lssar_is_causal_and_caches(transformers):
    import hf_lssa  # noqa: F401 - registers the attention types
    from transformers import DynamicCache
    model = tiny_llama("lssar")
    assert model.config._attn_implementation == "lssar"
    x = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(x).logits
        changed = x.clone()
        changed[:, 15:] = (changed[:, 15:] + 1) % 64
        assert torch.equal(model(changed).logits[:, :15], full[:, :15])   # causal: the future changes nothing
        sdpa = tiny_llama("sdpa")
        assert (sdpa(x).logits - full).abs().max() > 0.1   # the same weights with softmax: lssar really ran
        # cached decoding: a prefill of 10, then one token at a time (the cache's argument was renamed in 5.x)
        cache = {("cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"):
                 DynamicCache()}
        steps = [model(x[:, :10], use_cache=True, **cache).logits]
        for t in range(10, 24):
            steps.append(model(x[:, t:t + 1], use_cache=True, **cache).logits)
        # (logits of size ~3: transformers' own fp32 rounding differs between the two paths by ~2e-5)
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-4
        # a left-padded row (positions from its mask) equals the row alone: n_i counts real keys only
        ids, mask = left_pad([x[0, :8].tolist(), x[1].tolist()], pad=0)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        padded = model(ids, attention_mask=mask, position_ids=position_ids).logits
        assert (padded[0, -8:] - model(x[:1, :8]).logits[0]).abs().max() < 1e-5


# ----------------------------------------------------------------- lm-eval's own hf model
def test_lm_eval_hf_model_scores_like_ours(gpt2_export, gpt2_vocab_run):
    lm_eval = optional_module("lm_eval", eval_downstream.INSTALL)
    from types import SimpleNamespace
    from lm_eval.tasks import TaskManager

    from lm_eval.models.huggingface import HFLM

    import harness
    hf = HFLM.create_from_arg_string(
        f"pretrained={gpt2_export},trust_remote_code=True,dtype=float32", {"batch_size": 4, "device": "cpu"})
    ours = harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=4)
    assert hf.max_length == ours.max_length == 32
    pairs = [("The quick brown fox", " jumps over the lazy dog"), ("Question: What do bees make?\nAnswer:", " honey"),
             ("And God said ", "Let there be light"), (" ".join(["the sky is blue"] * 12), " and so on")]
    requests = [SimpleNamespace(args=p) for p in pairs]
    for (theirs, _), (mine, _) in zip(hf.loglikelihood(requests), ours.loglikelihood(requests)):
        assert theirs == pytest.approx(mine, abs=1e-4)
    tasks = TaskManager(include_path=TASKS, include_defaults=False)
    scores = [lm_eval.simple_evaluate(model=lm, tasks=["tiny_mc"], task_manager=tasks)["results"]["tiny_mc"]
              for lm in (hf, ours)]
    assert {k: v for k, v in scores[0].items() if k.startswith("acc")} == \
           {k: v for k, v in scores[1].items() if k.startswith("acc")}


def test_lm_eval_hf_model_generates_like_ours(gpt2_export, gpt2_vocab_run):
    """tiny_gen (generate_until, batched and left-padded on both sides): lm-eval's own hf model on
    the exported checkpoint writes the same texts, so the scores are equal."""
    lm_eval = optional_module("lm_eval", eval_downstream.INSTALL)
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import harness
    hf = HFLM.create_from_arg_string(
        f"pretrained={gpt2_export},trust_remote_code=True,dtype=float32", {"batch_size": 8, "device": "cpu"})
    ours = harness.LssaGPT(gpt2_vocab_run, device="cpu", batch_size=8)
    tasks = TaskManager(include_path=TASKS, include_defaults=False)
    runs = [lm_eval.simple_evaluate(model=lm, tasks=["tiny_gen"], task_manager=tasks, limit=16, log_samples=True)
            for lm in (hf, ours)]
    texts = [[s["resps"][0][0] for s in sorted(r["samples"]["tiny_gen"], key=lambda s: s["doc_id"])] for r in runs]
    assert texts[0] == texts[1] and len(texts[0]) == 16 and any(texts[0])
    assert runs[0]["results"]["tiny_gen"] == runs[1]["results"]["tiny_gen"]


# ----------------------------------------------------------------- GPU: the fused kernel inside transformers
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["lssa", "lssar"])
def test_gpu_kernel_path_inside_transformers(transformers, kind, monkeypatch):
    import hf_lssa
    from attention import kernel_module
    lssa_triton = kernel_module()
    calls = []
    real = lssa_triton.lssa_attention
    monkeypatch.setattr(lssa_triton, "lssa_attention", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    g = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(2, 8, 1024, 64, device="cuda", generator=g).bfloat16()
    k, v = (torch.randn(2, 4, 1024, 64, device="cuda", generator=g).bfloat16() for _ in range(2))  # 4 k/v heads
    y, _ = hf_lssa.attention_forward(kind, None, q, k, v, None)
    assert (2, 8, 1024, 64) in calls and y.dtype == torch.bfloat16
    # against the fp32 reference on the same bf16 inputs, relative to its largest value (as tests/test_kernels.py)
    expected = reference_attention(q.float(), k.float().repeat_interleave(2, 1), v.float().repeat_interleave(2, 1),
                                   kind).transpose(1, 2)
    assert (y.float() - expected).abs().max() / expected.abs().max() < 6e-2
    model = tiny_llama(kind, hidden_size=64).cuda().to(torch.bfloat16)   # a whole model (head_dim 16) through it
    calls.clear()
    with torch.no_grad():
        model(torch.randint(0, 64, (2, 256), device="cuda"))
    assert calls.count((2, 4, 256, 16)) == 2   # one per layer (besides check_kernel's own trial launch)


# ----------------------------------------------------------------- export_hf.py's parts, in-process and fast
# (the tests above load the exported folders with transformers: seconds each)

def test_neox_state_dict_puts_each_heads_q_k_v_rows_together():
    from model import GPTConfig
    C, H, hd = 4, 2, 2
    for bias, attention in ((True, "ssmax"), (False, "lssar")):
        cfg = GPTConfig(block_size=8, vocab_size=6, n_layer=2, n_head=H, n_embd=C, bias=bias, attention=attention)
        state = {}
        for i, (name, shape) in enumerate([("transformer.wte.weight", (6, C)), ("transformer.ln_f.weight", (C,))] + [
                (f"transformer.h.{n}.{part}", shape) for n in range(2) for part, shape in (
                    ("ln_1.weight", (C,)), ("ln_2.weight", (C,)), ("attn.c_attn.weight", (3 * C, C)),
                    ("attn.c_proj.weight", (C, C)), ("mlp.c_fc.weight", (4 * C, C)),
                    ("mlp.c_proj.weight", (C, 4 * C)))]):
            state[name] = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) + 1000 * i
            if bias and not name.endswith("wte.weight"):
                state[name[:-len("weight")] + "bias"] = -state[name].flatten()[:shape[0]] - 0.5
        scales = {n: torch.tensor([2.0, 3.0]) for n in range(2)}
        for n in range(2):
            state[f"transformer.h.{n}.attn.ssmax_scale"] = scales[n]
        out = export_hf.neox_state_dict(state, cfg)
        names = {"gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias"}
        for n in range(2):
            names |= {f"gpt_neox.layers.{n}.{m}.{w}" for w in ("weight", "bias") for m in (
                "input_layernorm", "post_attention_layernorm", "attention.query_key_value", "attention.dense",
                "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")}
        assert set(out) == names
        assert all(v.dtype == torch.float32 and v.is_contiguous() for v in out.values())
        assert torch.equal(out["gpt_neox.embed_in.weight"], state["transformer.wte.weight"].float())
        zero = lambda n: torch.zeros(n)   # noqa: E731  a bias=False model's biases
        for n in range(2):
            src, dst = f"transformer.h.{n}.", f"gpt_neox.layers.{n}."
            for a, b, rows in (("ln_1", "input_layernorm", C), ("ln_2", "post_attention_layernorm", C),
                               ("attn.c_proj", "attention.dense", C), ("mlp.c_fc", "mlp.dense_h_to_4h", 4 * C),
                               ("mlp.c_proj", "mlp.dense_4h_to_h", C)):
                assert torch.equal(out[dst + b + ".weight"], state[src + a + ".weight"].float())
                assert torch.equal(out[dst + b + ".bias"], state[src + a + ".bias"].float() if bias else zero(rows))
            w, b = state[src + "attn.c_attn.weight"], state.get(src + "attn.c_attn.bias", torch.zeros(3 * C))
            # NeoX's rows: head 0's q, k, v, then head 1's; ours: all heads' q, then k, then v
            order = [part * C + h * hd + r for h in range(H) for part in range(3) for r in range(hd)]
            scale = [(scales[n][h].item() if attention == "ssmax" and part == 0 else 1.0)
                     for h in range(H) for part in range(3) for r in range(hd)]
            for row, (src_row, s) in enumerate(zip(order, scale)):
                assert torch.equal(out[dst + "attention.query_key_value.weight"][row], (w[src_row] * s).float())
                assert out[dst + "attention.query_key_value.bias"][row].item() == b[src_row].item() * s
        assert torch.equal(out["gpt_neox.final_layer_norm.bias"],
                           state["transformer.ln_f.bias"].float() if bias else zero(C))


def test_hf_config_of_ours_and_of_the_portable_export():
    from model import GPTConfig
    cfg = GPTConfig(block_size=64, vocab_size=256, n_layer=3, n_head=4, n_embd=32, attention="lssar", reweight_p=7.0,
                    rope_base=500.0)
    portable = {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": 256, "hidden_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-5, "use_parallel_residual": False, "tie_word_embeddings": True, "attention_bias": True,
        "attention_dropout": 0.0, "hidden_dropout": 0.0, "rotary_pct": 1.0, "rotary_emb_base": 500.0,
        "rope_theta": 500.0, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0,
                                                 "partial_rotary_factor": 1.0},
        "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "use_cache": True,
        "torch_dtype": "float32"}
    assert export_hf.hf_config(cfg, "bytes", True) == portable
    ours = export_hf.hf_config(cfg, "gpt2", False)
    assert ours == {**portable, "architectures": ["LssaGPTForCausalLM"], "model_type": "lssa_gpt",
                    "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256,
                    "auto_map": {"AutoConfig": "modeling_lssa_gpt.LssaGPTConfig",
                                 "AutoModelForCausalLM": "modeling_lssa_gpt.LssaGPTForCausalLM"},
                    "attention": "lssar", "reweight_p": 7.0, "rope_base": 500.0, "block_size": 64, "tokenizer": "gpt2"}


def check_tokenizer(tok, ours, texts):
    for text in texts:
        ids = ours.encode(text)
        assert tok.encode(text, add_special_tokens=False).ids == ids
        assert tok.encode(text).ids == [ours.eot] + ids   # the document separator first, as in training
        assert tok.encode(text, "x").ids == [ours.eot] + ids + [ours.eot] + ours.encode("x")
        assert tok.decode(ids, skip_special_tokens=False) == text
        if ours.eot not in ids:   # the separator is a special token: decoding leaves it out by default
            assert tok.decode([ours.eot] + ids) == text and tok.decode([ours.eot]) == ""


def test_built_byte_tokenizer_gives_our_ids_and_its_files(transformers, tmp_path):
    from data.tokenizer import ByteTokenizer
    tok = export_hf.build_tokenizer("bytes")
    check_tokenizer(tok, ByteTokenizer(), ["Hello world", "naïve 日本 🙂\n\tĀ", "a\x00b\x00", "  two  spaces"])
    assert tok.get_vocab_size() == 256 and tok.token_to_id("\x00") == 0
    export_hf.write_tokenizer("bytes", str(tmp_path), 32)
    saved = json.load(open(tmp_path / "tokenizer.json"))
    assert saved == json.loads(tok.to_str())
    # what the file tells its other readers: bytes one by one (no regex split first), the separator
    # special and matched on the raw text
    assert saved["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                      "use_regex": False}
    assert saved["added_tokens"] == [{"id": 0, "content": "\x00", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True}]
    assert (tmp_path / "tokenizer_config.json").read_text() == json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "\x00", "eos_token": "\x00", "pad_token": "\x00",
         "clean_up_tokenization_spaces": False, "model_max_length": 512}, indent=2, ensure_ascii=False) + "\n"


def test_built_gpt2_tokenizer_gives_our_ids(transformers):
    from data.tokenizer import GPT2Tokenizer
    tok = export_hf.build_tokenizer("gpt2")   # about 2 s: GPT-2's 50,000 merges
    check_tokenizer(tok, GPT2Tokenizer(),
                    ["Hello world", "naïve 日本 🙂\n\tĀ", "  two  spaces", "It's 3.14 o'clock"])
    assert tok.encode("a<|endoftext|>b", add_special_tokens=False).ids == [64, 50256, 65]
    assert tok.get_vocab_size() == 50257


def test_write_json_keeps_unicode_and_ends_with_a_newline(tmp_path):
    export_hf.write_json({"b": "Ā\x00", "a": [1]}, str(tmp_path / "x.json"))
    assert (tmp_path / "x.json").read_text(encoding="utf-8") == '{\n  "b": "Ā\\u0000",\n  "a": [\n    1\n  ]\n}\n'


def card_checkpoint(tmp_path, config):
    from model import GPTConfig
    run = tmp_path / "demo-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 3.25}\n{"step": 20, "val_loss": 3.5}\n'
                                       '{"step": 30, "loss": 1.0}\n')
    ckpt = {"path": str(run / "ckpt_000020.pt"), "step": 20, "config": config}
    cfg = GPTConfig(block_size=32, vocab_size=256, n_layer=2, n_head=2, n_embd=8, attention="lssar", reweight_p=15.0,
                    rope_base=10000.0)
    return ckpt, cfg


def test_model_card_word_for_word(tmp_path):
    config = {"tokenizer": "bytes", "data_dir": "data/x", "dataset": "unused", "max_iters": 100,
              "total_batch_size": 4096, "learning_rate": 0.001}
    ckpt, cfg = card_checkpoint(tmp_path, config)
    sweep = [{"label": "demo-run [lssar p=15]", "tokens_per_length": 64, "train_context": 32,
              "results": [{"length": 32, "loss": 3.5}, {"length": 48, "loss": 3.75}]}, {"label": "again",
              "train_context": 32, "results": []}]
    assert export_hf.model_card(ckpt, cfg, False, sweep) == "\n".join([
        "# demo-run: lssar p=15 attention", "",
        "A GPT-2-style model with RoPE and lssar p=15 attention, trained and exported (export_hf.py) with lssa-gpt, an "
        "implementation of Gao & Spratling, *Softplus Attention with Re-weighting Boosts Length Extrapolation in Large "
        "Language Models* ([arXiv 2501.13428](https://arxiv.org/abs/2501.13428)).", "",
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)   # prepends the document separator",
        "```", "",
        "- model: 2 layers, 2 heads, width 8, vocabulary 256, trained at a context of 32 tokens (RoPE base 10000; it "
        "runs longer)",
        "- tokenizer: bytes; data: data/x",
        "- training: step 20 of 100, 4096 tokens per step, learning rate 0.001",
        "- final losses (nats per token): train_loss 3.2500, val_loss 3.5000", "",
        "Validation loss by inference length (demo-run [lssar p=15], 64 tokens per length):", "",
        "| length | loss |", "|---|---|", "| 32 (1x) | 3.5000 |", "| 48 (1.5x) | 3.7500 |", "",
        "Validation loss by inference length (again, ? tokens per length):", "", "| length | loss |", "|---|---|", "",
        "Training config:", "", "```json",
        '{\n "data_dir": "data/x",\n "dataset": "unused",\n "learning_rate": 0.001,\n "max_iters": 100,\n '
        '"tokenizer": "bytes",\n "total_batch_size": 4096\n}', "```", ""])


def test_model_card_of_a_portable_export_without_losses_or_settings(tmp_path):
    ckpt, cfg = card_checkpoint(tmp_path, {"tokenizer": "gpt2", "data_dir": "", "dataset": "fineweb",
                                           "total_batch_size": None})
    os.remove(tmp_path / "demo-run" / "metrics.jsonl")
    card = export_hf.model_card(ckpt, cfg, True, []).split("\n")
    assert card[6:8] == ["model = AutoModelForCausalLM.from_pretrained(PATH)",
                         "tokenizer = AutoTokenizer.from_pretrained(PATH)   # prepends the document separator"]
    assert card[11:15] == ["- tokenizer: gpt2; data: fineweb",
                           "- training: step 20 of ?, one micro-batch of tokens per step, learning rate ?",
                           "- portable export (stock gpt_neox): RoPE angles in fp32, so logits differ slightly from "
                           "the original's (docs/huggingface.md in lssa-gpt)", ""]
    ckpt["config"] = {"tokenizer": "gpt2"}
    assert export_hf.model_card(ckpt, cfg, True, []).split("\n")[11] == "- tokenizer: gpt2; data: ?"


def test_sweep_entries_are_this_checkpoints_runs(tmp_path):
    ckpt = {"path": str(tmp_path / "demo" / "ckpt_000020.pt"), "step": 20}
    assert export_hf.sweep_entries(None, ckpt) == [] and export_hf.sweep_entries("", ckpt) == []
    runs = [{"run": "demo", "step": 20, "n": 1}, {"run": "demo", "step": 10, "n": 2}, {"run": "other", "step": 20},
            {"step": 20}, {"run": "demo", "step": 20, "n": 3}]
    json.dump({"runs": runs}, open(tmp_path / "s.json", "w"))
    assert export_hf.sweep_entries(str(tmp_path / "s.json"), ckpt) == [runs[0], runs[4]]
    json.dump({"created": "today"}, open(tmp_path / "none.json", "w"))
    with pytest.raises(ValueError) as e:
        export_hf.sweep_entries(str(tmp_path / "none.json"), ckpt)
    assert str(e.value) == (f"{tmp_path / 'none.json'} has no length sweep of demo at step 20; run eval_length.py on "
                            "this checkpoint or leave out --sweep")


def test_export_writes_the_folder_in_one_step(transformers, tmp_path, capsys, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file
    from checkpoint import load_checkpoint
    run = random_checkpoint(str(tmp_path / "runs" / "lssar-run"), "lssar", 16, bias=False)
    ckpt = load_checkpoint(run)
    (tmp_path / "hf" / "lssar-X.tmp").mkdir(parents=True)   # a stale one of an interrupted export
    (tmp_path / "hf" / "lssar-X.tmp" / "stale").write_text("x")
    monkeypatch.chdir(tmp_path)   # anywhere: the model code is copied from the repository, not the working folder
    folder = tmp_path / "hf" / "lssar-X"
    assert export_hf.export(run, str(folder) + "/") == str(folder) + "/"   # not portable unless asked
    assert os.listdir(tmp_path / "hf") == ["lssar-X"]
    assert sorted(os.listdir(folder)) == ["README.md", "attention.py", "config.json", "generation_config.json",
                                          "model.safetensors", "modeling_lssa_gpt.py", "tokenizer.json",
                                          "tokenizer_config.json"]
    for name, src in (("modeling_lssa_gpt.py", "hf_lssa.py"), ("attention.py", "attention.py")):
        assert (folder / name).read_bytes() == open(os.path.join(ROOT, src), "rb").read()
    from model import GPTConfig
    cfg = GPTConfig(**ckpt["model_config"])
    assert json.load(open(folder / "config.json")) == export_hf.hf_config(cfg, "bytes", False)
    assert json.load(open(folder / "generation_config.json")) == {
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "do_sample": True, "temperature": 0.8, "top_k": 200,
        "top_p": 1.0}
    assert json.load(open(folder / "tokenizer_config.json"))["model_max_length"] == 16 * 16
    assert (folder / "README.md").read_text() == export_hf.model_card(ckpt, cfg, False, [])
    weights = load_file(folder / "model.safetensors")
    expected = export_hf.neox_state_dict(ckpt["model"], cfg)
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}

    softmax = random_checkpoint(str(tmp_path / "runs" / "softmax-run"), "softmax", 16)
    json.dump({"runs": [{"run": "softmax-run", "step": 1, "label": "s", "train_context": 16,
                         "results": [{"length": 16, "loss": 5.0}]}]}, open(tmp_path / "sweep.json", "w"))
    export_hf.main([softmax, str(tmp_path / "portable"), "--portable", "--sweep", str(tmp_path / "sweep.json")])
    assert capsys.readouterr().out == f"wrote {tmp_path / 'portable'}\n"
    assert sorted(os.listdir(tmp_path / "portable")) == ["README.md", "config.json", "generation_config.json",
                                                         "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert json.load(open(tmp_path / "portable" / "config.json"))["model_type"] == "gpt_neox"
    card = (tmp_path / "portable" / "README.md").read_text()
    assert "| 16 (1x) | 5.0000 |" in card and "portable export (stock gpt_neox)" in card

    for argv, message in (
            ([run, str(tmp_path / "p"), "--portable"], "error: --portable exports to stock gpt_neox, which has softmax "
             "attention only; this checkpoint uses lssar: leave out --portable (the folder then carries its attention "
             "code)"),
            ([run, str(folder)], f"error: {folder} exists; remove it or choose another folder"),
            ([run, str(tmp_path / "q"), "--sweep", str(tmp_path / "sweep.json")], "error: "
             f"{tmp_path / 'sweep.json'} has no length sweep of lssar-run at step 1; run eval_length.py on this "
             "checkpoint or leave out --sweep"),
            ([str(tmp_path / "nothing"), str(tmp_path / "r")], None)):
        with pytest.raises(SystemExit) as e:
            export_hf.main(argv)
        assert e.value.__cause__ is None and e.value.__suppress_context__
        assert str(e.value) == message if message else str(e.value).startswith("error: ")
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists() and not (tmp_path / "q.tmp").exists()
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(SystemExit) as e:
        export_hf.export(run, str(tmp_path / "s"))
    assert str(e.value) == "error: export_hf.py needs safetensors, tokenizers and transformers: " \
                           "pip install -r requirements-hf.txt"
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_export_help_shows_every_arguments_help_and_the_module_docstring(capsys, monkeypatch):
    flat = help_text(export_hf.main, export_hf, monkeypatch, capsys)
    for text in ("[--portable] [--sweep SWEEP] checkpoint out_dir",
                 "checkpoint run directory (its newest checkpoint) or checkpoint file",
                 "out_dir the folder to write (must not exist)",
                 "--portable stock gpt_neox, no code of ours (softmax only)",
                 "--sweep SWEEP an eval_length.py result JSON with this checkpoint's length sweep"):
        assert text in flat, text
