"""
Our checkpoints as an lm-evaluation-harness model type, registered as "lssa-gpt".

    python eval_downstream.py out/demo-lssar --tasks arc_easy        # the usual way in
    lm_eval.simple_evaluate(model=LssaGPT("out/demo-lssar"), tasks=["arc_easy"])

lm-eval asks a model three things, as text: the log-probability of a continuation after a
context (multiple-choice tasks compare the choices' log-probabilities: acc, acc_norm), the
log-probability of a whole text (perplexity tasks), and a generation up to a stop sequence
(greedy unless the task samples). Here each is a forward pass of model.GPT on token ids:

- Text becomes tokens with the checkpoint's own tokenizer (GPT-2's BPE, or bytes:
  checkpoint.tokenizer_of). Every text starts with the document separator (<|endoftext|>, or
  NUL for bytes), which precedes every document in training, so a prompt looks like the start
  of a document to the model.
- A window holds at most `max_length` tokens (default: the training context; up to 16x, as
  far as the length sweep checks RoPE; "16x" says it relative to the training context). Longer contexts lose their left end; a prompt to
  generate from keeps its last max_length - max_gen_toks, as lm-eval's own hf model does.
- Log-probabilities are fp32 over the model's whole output vocabulary, the distribution that
  training's cross-entropy uses; greedy choices look only at the tokenizer's real tokens
  (GPT-2's 50,257 of the padded 50,304).
- Generation (generate_until) is batched: prompts with the same sampling options, longest
  first, left-padded, through GPT.generate's KV cache; greedy unless a task asks to sample.
- bf16 autocast on a GPU, fp32 on the CPU, as in eval_length.py.

Needs lm-eval (`pip install -r requirements-eval.txt`); nothing else in the repository does.
"""
import sys
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from checkpoint import evaluation_overrides, load_model, tokenizer_of
from runinfo import pick_device

DEFAULT_GEN_TOKS = 256  # lm-eval's max_gen_toks when a task gives none
MAX_MULTIPLIER = 16  # how far past the training context max_length may go (eval_length.py's longest sweep)


def split_pair(tok, context, continuation):
    """(context ids, continuation ids) for scoring `continuation` after `context`.

    The pair is tokenised as one text and split where the context's tokens end, so the
    continuation gets the tokens it has in running text; whitespace at the end of the
    context moves to the continuation first, because GPT-2's BPE attaches a space to the
    word after it (" Paris" is one token, "Paris" another)."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    head = tok.encode(stripped)
    whole = tok.encode(stripped + continuation)
    return [tok.eot] + head, whole[len(head):]


def rolling_windows(tokens, max_length):
    """Cut tokens[1:] (tokens[0] is the document separator, tok.eot) into (context, continuation)
    pairs of at most max_length + 1 tokens such that every token is scored exactly once,
    each after as many preceding tokens as fit: the first window from the start, every later
    one with a full max_length of input, of which only its new tokens are scored."""
    pairs = []
    for start in range(1, len(tokens), max_length):
        end = min(start + max_length, len(tokens))
        first = max(0, end - 1 - max_length)
        pairs.append((tokens[first:start], tokens[start:end]))
    return pairs


def window_tokens(max_length, train_context):
    """max_length as tokens: a number, "<k>x" (k times the training context: one setting for models
    trained at different contexts, as the paper recipe's "16x"), or None for the training context."""
    if isinstance(max_length, str) and max_length.endswith("x"):
        return int(max_length[:-1]) * train_context
    return int(max_length or train_context)


@register_model("lssa-gpt")
class LssaGPT(LM):
    """lm-eval model type for a checkpoint of this repository (a run directory means its newest
    checkpoint). attention/p/attention_backend evaluate it otherwise than it was trained, as
    the --attention/--p options of eval_length.py do."""

    def __init__(self, checkpoint, attention=None, p=None, attention_backend=None, max_length=None,
                 batch_size=16, device="auto", max_batch_size=None):
        super().__init__()
        self.overrides = evaluation_overrides(attention, None if p is None else float(p), attention_backend)
        self._device = pick_device(device or "auto")
        self.model, self.ckpt = load_model(str(checkpoint), self._device, **self.overrides)
        self.tok = tokenizer_of(self.ckpt)   # GPT-2's BPE or bytes: what the checkpoint was trained on
        if self.model.config.vocab_size < self.tok.vocab_size:
            raise ValueError(f"{self.ckpt['path']}: its vocabulary of {self.model.config.vocab_size} tokens is "
                             f"smaller than the {self.tok.name} tokenizer's {self.tok.vocab_size}: it was not "
                             f"trained on {self.tok.name} tokens, so it cannot read text")
        self.train_context = self.model.config.block_size
        self.max_length = window_tokens(max_length, self.train_context)
        if not 1 <= self.max_length <= MAX_MULTIPLIER * self.train_context:
            raise ValueError(f"max_length {self.max_length} is outside 1..{MAX_MULTIPLIER * self.train_context} "
                             f"(up to {MAX_MULTIPLIER}x the training context of {self.train_context})")
        # "auto" (lm-eval's CLI default spelling) and None mean our default
        self.batch_size = 16 if batch_size in (None, "auto") else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        on_gpu = self._device.startswith("cuda")
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()

    @property
    def tokenizer_name(self):
        return self.tok.name

    def get_model_info(self):
        """What lm-eval records about the model in its results' config."""
        cfg = self.model.config
        return {"checkpoint": self.ckpt["path"], "step": self.ckpt["step"], "attention": cfg.attention,
                "reweight_p": cfg.reweight_p, "overrides": self.overrides, "train_context": self.train_context,
                "max_length": self.max_length, "tokenizer": self.tok.name}

    # -------------------------------------------------------------- scoring
    @torch.no_grad()
    def score(self, pairs, disable_tqdm=True):
        """[(log-probability of the continuation, whether greedy decoding produces it)] for
        (context ids, continuation ids) pairs, batch_size at a time, longest first (so a batch
        that does not fit in memory fails at once, and padding is small)."""
        from tqdm import tqdm
        for ctx, cont in pairs:
            if len(cont) > self.max_length:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit in max_length "
                                 f"{self.max_length}; raise max_length")
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        results = [None] * len(pairs)
        for start in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood",
                          disable=disable_tqdm or not sys.stderr.isatty()):
            batch = order[start:start + self.batch_size]
            # left-truncate each to the last max_length inputs (+1 target)
            rows = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1):] for i in batch]
            width = max(len(r) for r in rows) - 1
            # right padding: a position sees only those before it, so padding changes nothing
            inputs = torch.full((len(rows), width), self.tok.eot, dtype=torch.long)
            for b, row in enumerate(rows):
                inputs[b, :len(row) - 1] = torch.tensor(row[:-1])
            sizes = [len(pairs[i][1]) for i in batch]
            targets = torch.tensor([t for row, n in zip(rows, sizes) for t in row[len(row) - n:]], device=self._device)
            with self.autocast:
                hidden = self.model.hidden_states(inputs.to(self._device))
                # only the continuations' positions go through the vocabulary projection, all at once
                picked = torch.cat([hidden[b, len(row) - 1 - n:len(row) - 1]
                                    for b, (row, n) in enumerate(zip(rows, sizes))])
                logits = self.model.lm_head(picked).float()
            logprobs = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
            hits = logits[:, :self.tok.vocab_size].argmax(-1) == targets
            for i, logprob, hit in zip(batch, logprobs.split(sizes), hits.split(sizes)):
                results[i] = (logprob.sum().item(), bool(hit.all()))
        return results

    def loglikelihood(self, requests, disable_tqdm=False):
        pairs = [split_pair(self.tok, *req.args) for req in requests]
        results = self.score(pairs, disable_tqdm)
        for req, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        windows, owner = [], []
        for n, req in enumerate(requests):
            for pair in rolling_windows([self.tok.eot] + self.tok.encode(req.args[0]), self.max_length):
                windows.append(pair)
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self.score(windows, disable_tqdm)):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -------------------------------------------------------------- generation
    def context_tokens(self, context, max_gen_toks):
        """The prompt's tokens, the document separator first, cut to the last max_length -
        max_gen_toks so that prompt and generation fit in a window (as lm-eval's own hf model cuts)."""
        room = self.max_length - max_gen_toks
        if room < 1:
            raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in max_length "
                             f"{self.max_length}; raise max_length or lower max_gen_toks")
        return ([self.tok.eot] + self.tok.encode(context))[-room:]

    @torch.no_grad()
    def generate_batch(self, prompts, until, limits, temperature=0.0, top_k=None):
        """Continuations (text) of token-id prompts, decoded together: left-padded to the longest
        and run through GPT.generate's KV cache. Row b ends at the document separator, at its
        first stop sequence of until[b] (cut off) or after limits[b] tokens; the batch ends when
        every row has."""
        width = max(len(p) for p in prompts)
        idx = torch.full((len(prompts), width), self.tok.eot, dtype=torch.long)
        for b, p in enumerate(prompts):
            idx[b, width - len(p):] = torch.tensor(p)
        pad = torch.tensor([width - len(p) for p in prompts])
        done = [False] * len(prompts)

        def finished(new):   # called after every step with the tokens so far (B, t)
            for b, row in enumerate(new.tolist()):
                if not done[b]:
                    done[b] = (len(row) >= limits[b] or row[-1] == self.tok.eot
                               or any(s in self.tok.decode(row) for s in until[b]))
            return all(done)

        with self.autocast:
            out = self.model.generate(idx.to(self._device), max(limits), temperature=temperature, top_k=top_k,
                                      pad=pad, stop=finished, vocab=self.tok.vocab_size)
        texts = []
        for row, stops, limit in zip(out[:, width:].tolist(), until, limits):
            row = row[:limit]
            row = row[:row.index(self.tok.eot)] if self.tok.eot in row else row
            text = self.tok.decode(row)
            texts.append(text[:min((text.find(s) for s in stops if s in text), default=len(text))])
        return texts

    def generate_until(self, requests, disable_tqdm=False):
        """lm-eval's generation requests, batch_size at a time: requests with the same sampling
        options together, longest prompt first (a batch that does not fit fails at once, and
        padding stays small); stop sequences and token limits per request."""
        from tqdm import tqdm
        items = []
        for req in requests:
            context, gen_kwargs = req.args
            options = generation_options(gen_kwargs)
            items.append((self.context_tokens(context, options["max_gen_toks"]), options))
        groups = {}
        for n, (_, options) in enumerate(items):
            groups.setdefault((options["temperature"], options["top_k"]), []).append(n)
        results = [None] * len(items)
        bar = tqdm(total=len(items), desc="generate_until", disable=disable_tqdm or not sys.stderr.isatty())
        for (temperature, top_k), members in groups.items():
            members.sort(key=lambda n: -len(items[n][0]))
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                texts = self.generate_batch([items[n][0] for n in batch], [items[n][1]["until"] for n in batch],
                                            [items[n][1]["max_gen_toks"] for n in batch], temperature, top_k)
                for n, text in zip(batch, texts):
                    results[n] = text
                bar.update(len(batch))
        bar.close()
        for req, result in zip(requests, results):
            self.cache_hook.add_partial("generate_until", req.args, result)
        return results


def generation_options(gen_kwargs):
    """lm-eval's generation arguments as GPT.generate takes them: until (a list of stop strings),
    max_gen_toks (lm-eval's default 256), and greedy decoding (temperature 0) unless do_sample
    (then temperature, default 1, and top_k, default none); a temperature > 0 without do_sample
    samples too, as lm-eval reads it."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else [s for s in until if s]
    limits = [kwargs.pop(k, None) for k in ("max_gen_toks", "max_new_tokens")]   # lm-eval's order of aliases
    max_gen_toks = int(next((v for v in limits if v is not None), DEFAULT_GEN_TOKS))
    temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
    do_sample = kwargs.pop("do_sample", None)
    do_sample = temperature > 0 if do_sample is None else bool(do_sample)
    top_k = kwargs.pop("top_k", None)
    top_p = kwargs.pop("top_p", None)
    if max_gen_toks < 1:
        raise ValueError(f"max_gen_toks must be at least 1, got {max_gen_toks}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if top_p not in (None, 1, 1.0):
        raise ValueError(f"top_p={top_p} is not supported by lssa-gpt: sample with temperature and top_k")
    if top_k is not None and int(top_k) < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if not do_sample:
        temperature, top_k = 0.0, None
    elif temperature == 0:
        temperature = 1.0   # do_sample with no temperature: the model's own distribution
    return {"until": until, "max_gen_toks": max_gen_toks, "temperature": temperature,
            "top_k": None if top_k is None else int(top_k)}
