"""
Export a checkpoint as a Hugging Face transformers model folder (docs/huggingface.md).

    python export_hf.py out/demo-lssar hf/demo-lssar
    python export_hf.py out/small-softmax hf/small-softmax --portable     # stock gpt_neox, softmax only
    python export_hf.py out/small-lssar hf/small-lssar --sweep results/small.json   # sweep in the card

    model = AutoModelForCausalLM.from_pretrained("hf/demo-lssar", trust_remote_code=True)

Our model is GPT-NeoX with sequential residuals, full-width RoPE, tanh GELU and tied
embeddings, so the weights go into GPT-NeoX's layout (model.safetensors). The folder's model
type is our own, "lssa_gpt": its code (hf_lssa.py, as modeling_lssa_gpt.py, and attention.py)
travels in the folder and runs the checkpoint's attention type whatever attn_implementation is
asked for. Without trust_remote_code=True loading fails; it never falls back to softmax.
Logits equal GPT.forward's (tests/test_hf.py).

--portable writes model type "gpt_neox" instead: no code of ours, loads anywhere, but only for
softmax checkpoints, and transformers forms RoPE angles in fp32, so logits differ from ours by
~1e-4 at the training length and more at 16x (docs/huggingface.md).

Also written: the tokenizer (tokenizer.json, built offline with the `tokenizers` library:
GPT-2 from the pinned BPE ranks, or bytes with id = byte), generation_config.json (the document
separator as end of text, sample.py's sampling defaults) and README.md, a model card with the
training config, the validation loss and, with --sweep, the length sweep's losses.
Needs requirements-hf.txt.
"""
import argparse
import json
import os
import shutil
import sys

import torch

from attention import describe
from checkpoint import load_checkpoint
from data.tokenizer import EOT, byte_stand_ins, data_gym_files, load_ranks
from eval_length import final_losses, run_name
from model import GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))
INSTALL = "pip install -r requirements-hf.txt"
MODEL_CODE = {"modeling_lssa_gpt.py": "hf_lssa.py", "attention.py": "attention.py"}  # folder file: repo file
# the document separator (precedes every document in training) as the tokenizers spell it
SEPARATORS = {"gpt2": ("<|endoftext|>", EOT), "bytes": ("\x00", 0)}
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 200, "top_p": 1.0}  # scripts/sample.py's defaults


def neox_state_dict(state, cfg: GPTConfig):
    """Our GPT's weights under GPT-NeoX's names. c_attn's rows are [Q; K; V] blocks; NeoX's fused
    query_key_value is per head, [q_h; k_h; v_h] for each head. NeoX always has biases: zeros for
    a bias=False model. ssmax's per-head s_h is folded into the query rows (a scale of q)."""
    H, C = cfg.n_head, cfg.n_embd
    hd = C // H
    out = {"gpt_neox.embed_in.weight": state["transformer.wte.weight"]}   # lm_head is tied to it

    def linear(src, dst, rows):
        out[dst + ".weight"] = state[src + ".weight"]
        out[dst + ".bias"] = state.get(src + ".bias", torch.zeros(rows))

    def layer_norm(src, dst):
        out[dst + ".weight"] = state[src + ".weight"]
        out[dst + ".bias"] = state.get(src + ".bias", torch.zeros(C))

    layer_norm("transformer.ln_f", "gpt_neox.final_layer_norm")
    for i in range(cfg.n_layer):
        src, dst = f"transformer.h.{i}.", f"gpt_neox.layers.{i}."
        layer_norm(src + "ln_1", dst + "input_layernorm")
        layer_norm(src + "ln_2", dst + "post_attention_layernorm")
        w = state[src + "attn.c_attn.weight"].view(3, H, hd, C).clone()
        b = state.get(src + "attn.c_attn.bias", torch.zeros(3 * C)).view(3, H, hd).clone()
        if cfg.attention == "ssmax":
            s = state[src + "attn.ssmax_scale"]
            w[0] *= s[:, None, None]
            b[0] *= s[:, None]
        out[dst + "attention.query_key_value.weight"] = w.transpose(0, 1).reshape(3 * C, C)
        out[dst + "attention.query_key_value.bias"] = b.transpose(0, 1).reshape(3 * C)
        linear(src + "attn.c_proj", dst + "attention.dense", C)
        linear(src + "mlp.c_fc", dst + "mlp.dense_h_to_4h", 4 * C)
        linear(src + "mlp.c_proj", dst + "mlp.dense_4h_to_h", C)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def hf_config(cfg: GPTConfig, tokenizer, portable):
    """config.json. RoPE's base is written in each spelling that some transformers version reads."""
    sep = SEPARATORS[tokenizer][1]
    config = {
        "architectures": ["GPTNeoXForCausalLM" if portable else "LssaGPTForCausalLM"],
        "model_type": "gpt_neox" if portable else "lssa_gpt",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "intermediate_size": 4 * cfg.n_embd, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-5, "use_parallel_residual": False, "tie_word_embeddings": True,
        "attention_bias": True, "attention_dropout": 0.0, "hidden_dropout": 0.0,
        "rotary_pct": 1.0, "rotary_emb_base": cfg.rope_base, "rope_theta": cfg.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base, "partial_rotary_factor": 1.0},
        # the training context: lm-eval's default window, as harness.py's
        "max_position_embeddings": cfg.block_size,
        "bos_token_id": sep, "eos_token_id": sep, "pad_token_id": sep, "use_cache": True, "torch_dtype": "float32",
    }
    if not portable:
        config.update({
            "auto_map": {"AutoConfig": "modeling_lssa_gpt.LssaGPTConfig",
                         "AutoModelForCausalLM": "modeling_lssa_gpt.LssaGPTForCausalLM"},
            "attention": cfg.attention, "reweight_p": cfg.reweight_p, "rope_base": cfg.rope_base,
            "block_size": cfg.block_size, "tokenizer": tokenizer})
    return config


def build_tokenizer(name):
    """The `tokenizers` Tokenizer giving our token ids. Encoding with special tokens (the default
    of transformers' tokenizer(text)) prepends the document separator, as harness.py does and
    training saw; the separator in a text also becomes its id (GPT-2: the literal "<|endoftext|>",
    which our tokenizer reads as plain text; bytes: NUL, which is its id anyway)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    sep, sep_id = SEPARATORS[name]
    if name == "gpt2":
        vocab_bpe, encoder_json = data_gym_files(load_ranks())   # GPT-2's original files, byte-exact
        vocab = json.loads(encoder_json)
        merges = [tuple(line.split(" ")) for line in vocab_bpe.decode().splitlines()[1:] if line]
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)   # GPT-2's regex
    else:
        # byte-level with no merges: each byte its own token, id = byte value. Byte 0 is spelled
        # "\x00" (the special token) instead of its byte-level stand-in, which is a real
        # character (U+0100) that must still encode as its UTF-8 bytes.
        vocab = {c: b for b, c in byte_stand_ins().items()}
        vocab[sep] = vocab.pop(byte_stand_ins()[0])
        tok = Tokenizer(models.BPE(vocab, []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(sep, special=True, normalized=False)])
    assert tok.token_to_id(sep) == sep_id
    tok.post_processor = processors.TemplateProcessing(single=f"{sep} $A", pair=f"{sep} $A {sep} $B:1",
                                                       special_tokens=[(sep, sep_id)])
    return tok


def write_tokenizer(name, out_dir, context):
    build_tokenizer(name).save(os.path.join(out_dir, "tokenizer.json"))
    sep = SEPARATORS[name][0]
    write_json({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": sep, "eos_token": sep, "pad_token": sep,
                "clean_up_tokenization_spaces": False, "model_max_length": 16 * context},
               os.path.join(out_dir, "tokenizer_config.json"))


def model_card(ckpt, cfg, portable, sweep):
    """README.md: what the model is, how it was trained and how it did."""
    run = run_name(ckpt)
    losses = final_losses(os.path.dirname(ckpt["path"]), ckpt["step"])
    train = ckpt["config"]
    trust = "" if portable else ", trust_remote_code=True"
    lines = [f"# {run}: {describe(cfg.attention, cfg.reweight_p)} attention",
             "",
             f"A GPT-2-style model with RoPE and {describe(cfg.attention, cfg.reweight_p)} attention, trained and "
             "exported (export_hf.py) with lssa-gpt, an implementation of Gao & Spratling, *Softplus Attention with "
             "Re-weighting Boosts Length Extrapolation in Large Language Models* "
             "([arXiv 2501.13428](https://arxiv.org/abs/2501.13428)).",
             "",
             "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             f"model = AutoModelForCausalLM.from_pretrained(PATH{trust})",
             f"tokenizer = AutoTokenizer.from_pretrained(PATH{trust})   # prepends the document separator",
             "```",
             "",
             f"- model: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, vocabulary {cfg.vocab_size}, "
             f"trained at a context of {cfg.block_size} tokens (RoPE base {cfg.rope_base:g}; it runs longer)",
             f"- tokenizer: {train['tokenizer']}; data: {train.get('data_dir') or train.get('dataset', '?')}",
             f"- training: step {ckpt['step']} of {train.get('max_iters', '?')}, "
             f"{train.get('total_batch_size') or 'one micro-batch of'} tokens per step, "
             f"learning rate {train.get('learning_rate', '?')}",
             ]
    if losses:
        lines.append("- final losses (nats per token): " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    if portable:
        lines.append("- portable export (stock gpt_neox): RoPE angles in fp32, so logits differ slightly from the "
                     "original's (docs/huggingface.md in lssa-gpt)")
    for entry in sweep:
        lines += ["", f"Validation loss by inference length ({entry['label']}, {entry.get('tokens_per_length', '?')} "
                  "tokens per length):", "", "| length | loss |", "|---|---|"]
        lines += [f"| {r['length']} ({r['length'] / entry['train_context']:g}x) | {r['loss']:.4f} |"
                  for r in entry["results"]]
    lines += ["", "Training config:", "", "```json", json.dumps(train, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def sweep_entries(path, ckpt):
    """The runs of an eval_length.py result file that evaluated this checkpoint."""
    if not path:
        return []
    report = json.load(open(path))
    found = [r for r in report.get("runs", []) if r.get("run") == run_name(ckpt) and r.get("step") == ckpt["step"]]
    if not found:
        raise ValueError(f"{path} has no length sweep of {run_name(ckpt)} at step {ckpt['step']}; "
                         f"run eval_length.py on this checkpoint or leave out --sweep")
    return found


def write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def export(checkpoint, out_dir, portable=False, sweep=None):
    """Write the folder (into a temporary one renamed into place: never half-written). Returns out_dir."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise SystemExit(f"error: export_hf.py needs safetensors, tokenizers and transformers: {INSTALL}") from None
    ckpt = load_checkpoint(checkpoint)
    cfg = GPTConfig(**ckpt["model_config"])
    tokenizer = ckpt["config"]["tokenizer"]
    if portable and cfg.attention != "softmax":
        raise ValueError(f"--portable exports to stock gpt_neox, which has softmax attention only; this checkpoint "
                         f"uses {cfg.attention}: leave out --portable (the folder then carries its attention code)")
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; remove it or choose another folder")
    entries = sweep_entries(sweep, ckpt)
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(neox_state_dict(ckpt["model"], cfg), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    write_json(hf_config(cfg, tokenizer, portable), os.path.join(tmp, "config.json"))
    sep = SEPARATORS[tokenizer][1]
    write_json({"bos_token_id": sep, "eos_token_id": sep, "pad_token_id": sep, **SAMPLING},
               os.path.join(tmp, "generation_config.json"))
    write_tokenizer(tokenizer, tmp, cfg.block_size)
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(model_card(ckpt, cfg, portable, entries))
    if not portable:
        for name, src in MODEL_CODE.items():
            shutil.copyfile(os.path.join(ROOT, src), os.path.join(tmp, name))
    os.replace(tmp, out_dir)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run directory (its newest checkpoint) or checkpoint file")
    p.add_argument("out_dir", help="the folder to write (must not exist)")
    p.add_argument("--portable", action="store_true", help="stock gpt_neox, no code of ours (softmax only)")
    p.add_argument("--sweep", default=None, help="an eval_length.py result JSON with this checkpoint's length sweep")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, args.portable, args.sweep)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
