"""Sample text from a language-model run with fastai's `LMLearner.predict` semantics.

As fastai: the prompt is tokenized with the same rules (so it starts with `xxbos`), each
next word is drawn from softmax(logits) ** (1 / temperature) (computed as softmax(logits / temperature),
which does not underflow at a low temperature), `xxunk` is never drawn, and
the output is decoded with `decode_spec_tokens`. A backward LM (`data.backwards`) extends the
prompt to the left: the text it prints ends with the prompt. The hidden state carries over between
steps, which gives the same distribution as fastai's re-reading of the whole sequence. A sample is at most
MAX_WORDS tokens: one step per token, so a huge request would run for hours (one CPU core: ~3,000 tokens/s
for a tiny model, ~50 for the paper's).
"""
from __future__ import annotations

import torch

from ulmfit_cli.console import progress
from ulmfit_cli.corpus.direction import orient_prompt, orient_sample
from ulmfit_cli.corpus.text import UNK, numericalize, tokenize
from ulmfit_cli.corpus.tokenize import detokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import LM_STAGES, LM_WEIGHTS
from ulmfit_cli.runs import read_run
from ulmfit_cli.train.device import decide, torch_device
from ulmfit_cli.train.learners import lm_model

MAX_WORDS = 10_000


@torch.no_grad()
def generate(run_dir, prompt: str, n_words: int = 40, temperature: float = 1.0, n_samples: int = 1,
             seed: int | None = None, device: str = "auto") -> list[str]:
    if not 1 <= n_words <= MAX_WORDS:
        raise UlmfitError(f"--n-words: {n_words:,} is outside 1..{MAX_WORDS:,} (tokens per sample; "
                          f"generation takes one model step per token)")
    if not 0 < temperature < float("inf"):
        raise UlmfitError(f"--temperature: {temperature} is not a finite number above 0")
    up = read_run(run_dir, "--run-dir", LM_STAGES, LM_WEIGHTS)
    dev = torch_device(decide(device, "fp32", key="--")[0])
    model = lm_model(up.vocab, up.arch(), up.weights(LM_WEIGHTS)).to(dev).eval()
    sp_model = up.sp_model  # a file lookup: once
    prompt_ids = torch.from_numpy(numericalize(tokenize([prompt], workers=0, sp_model=sp_model, lang=up.lang),
                                               up.vocab)[0]).to(dev)
    prompt_ids = orient_prompt(prompt_ids, up.backwards)  # a backward LM writes what comes before the prompt
    # subword vocabs may hold '▁xxunk' too
    unk = [i for i, w in enumerate(up.vocab) if w.lstrip("▁") == UNK]
    gen = torch.Generator(device=dev)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    samples = []
    bar = progress(total=n_samples * n_words, desc="generate", unit="tok", leave=False)
    for _ in range(n_samples):
        model.reset()
        ids, x = prompt_ids.tolist(), prompt_ids[None]
        for _ in range(n_words):
            bar.update()
            logits = model(x)[0][0, -1].float()
            if temperature == 1.0:  # the arithmetic of before, exactly: a seed gives the same text as it did
                probs = logits.softmax(-1)
                probs[unk] = 0.0
            else:  # softmax(logits / T) is softmax(logits) ** (1 / T) normalized; the power underflows to 0
                logits[unk] = float("-inf")
                probs = (logits / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            ids.append(int(nxt))
            x = nxt[None]
        ids = orient_sample(ids, up.backwards)
        samples.append(detokenize([up.vocab[i] for i in ids], subwords=sp_model is not None))
    bar.close()
    return samples
