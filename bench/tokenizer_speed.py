"""fastai's word tokenizer against ulmfit's, on the same real text in one process: speed and agreement.

fastai: `TokenizeWithRules(SpacyTokenizer(), rules=defaults.text_proc_rules)`, what `tokenize_df`
runs in each worker. ulmfit: `corpus.text.WordTokenizer`, which memoizes spaCy per
whitespace run. Text: the Wikipedia sample's articles (each once, so the memo starts cold and
sees no repeated documents), plus TREC-6 and SST-2 when ../shared/data is there.
  python bench/tokenizer_speed.py
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import pandas as pd  # noqa: E402
from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults  # noqa: E402

from ulmfit_cli.corpus.text import WordTokenizer  # noqa: E402
from ulmfit_cli.corpus.wikidump import DumpStats, clean_pages, iter_pages  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def texts() -> list[str]:
    import prepare_speed
    stats = DumpStats()
    out = list(clean_pages(iter_pages(prepare_speed.sample_dump(), stats), stats.skipped))
    for f in (DATA / "trec6" / "train.csv", DATA / "sst2" / "train.csv"):
        if f.is_file():
            out += pd.read_csv(f)["text"].astype(str).tolist()
    return out


def main() -> None:
    docs = texts()
    fastai_tok = TokenizeWithRules(SpacyTokenizer(), rules=defaults.text_proc_rules)
    t0 = time.perf_counter()
    ref = [list(d) for d in fastai_tok(docs)]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = list(WordTokenizer()(docs))
    t_ours = time.perf_counter() - t0
    n = sum(map(len, ref))
    same = sum(a == b for a, b in zip(ref, ours))
    same_tokens = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ref, ours))
    print(f"{len(docs):,} documents, {n:,} fastai tokens, one process")
    print("| tokenizer | seconds | tokens/s |")
    print("| --- | --- | --- |")
    print(f"| fastai TokenizeWithRules(SpacyTokenizer) | {t_ref:.2f} | {n / t_ref:,.0f} |")
    print(f"| ulmfit WordTokenizer | {t_ours:.2f} | {n / t_ours:,.0f} |")
    print(f"speed-up {t_ref / t_ours:.2f}x; identical documents {same}/{len(docs)}; "
          f"identical tokens {same_tokens / n:.4%}")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    main()
