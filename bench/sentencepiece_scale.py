"""SentencePiece at Wikipedia scale: time and peak memory as the dump grows, ulmfit against stock fastai.

For each `--copies` size, a multistream dump of the Wikipedia sample (bench/prepare_speed.py's
`make_dump`: 10 copies are about 60 MB of XML) is read two ways:

- ulmfit: `ulmfit prepare --set data.tokenizer=sentencepiece`, the whole command (a sample of at most
  data.sp_train_chars of clean text spread over the dump, SentencePiece's trainer sampling
  input_sentence_size lines of it, then every page tokenized by the workers). The store's stats give
  the sample's size and the seconds spent reading it and training.
- stock fastai: the whole clean text (wikiextractor's output, fastai's rules, a paragraph a line)
  written to a file, then fastai's `SentencePieceTokenizer.train` on that file, which hands the trainer
  every line (and deletes it). Only the training is measured; the extraction is a stock user's
  earlier step.

Both train a unigram model of `--vocab` pieces. Peak memory is sampled every 0.25 s over each process
tree (bench/prepare_speed.py's `run_measured`). ulmfit's peak should not grow with the dump.
  python bench/sentencepiece_scale.py [--copies 10,40] [--workers 2] [--vocab 15000] [--skip-stock]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_speed import make_dump, run_measured  # noqa: E402  (a sibling script)

STOCK_TRAIN = r'''
import sys, time, warnings
warnings.filterwarnings("ignore")
from fastai.text.all import SentencePieceTokenizer
from pathlib import Path
text, vocab, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
SentencePieceTokenizer(vocab_sz=vocab, cache_dir=out).train(text)
print(time.perf_counter() - t0)
'''


def stock_text(dump: Path, out: Path, tmp: Path, workers: int) -> tuple[int, int]:
    """wikiextractor's text of `dump` after fastai's rules, a paragraph a line -> (characters, lines)."""
    import subprocess

    from fastai.text.core import defaults
    from fastcore.basics import compose
    subprocess.run([sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "--no-templates", "--json",
                    "--processes", str(workers), "-q", "-o", str(tmp / "wx")], check=True)
    rules = compose(*defaults.text_proc_rules)
    chars = lines = 0
    with open(out, "w", encoding="utf-8") as f:
        for part in sorted((tmp / "wx").glob("*/wiki_*")):
            for row in part.read_text(encoding="utf-8").splitlines():
                for line in rules(json.loads(row)["text"]).split("\n"):
                    if line.strip():
                        f.write(line + "\n")
                        chars, lines = chars + len(line), lines + 1
    return chars, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", default="10,40", help="dump sizes, in copies of the sample (10: about 60 MB)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--vocab", type=int, default=15000, help="SentencePiece vocab size (MultiFiT's 15k)")
    ap.add_argument("--skip-stock", action="store_true", help="measure ulmfit prepare only")
    args = ap.parse_args()
    py, gb = sys.executable, 2 ** 30
    rows = []
    for copies in [int(c) for c in args.copies.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            dump = tmp / "xxwiki-bench-pages-articles-multistream.xml.bz2"
            mb = make_dump(dump, copies, "multistream") / 1e6
            env = {**os.environ, "CI": "true", "ULMFIT_CACHE": str(tmp / "cache")}
            sec, (_, pss, top), _ = run_measured(
                [py, "-m", "ulmfit_cli", "prepare", "--set", f"data.source={dump}", "--set",
                 "data.tokenizer=sentencepiece", "--set", f"data.sp_vocab_size={args.vocab}",
                 "--set", f"data.workers={args.workers}"], env=env)
            sp = json.loads(next((tmp / "cache").glob("*/stats.json")).read_text())["sentencepiece_sample"]
            row = {"copies": copies, "xml_mb": mb, "prepare_s": sec, "prepare_pss": pss, "prepare_top": top, **sp}
            if not args.skip_stock:
                chars, lines = stock_text(dump, tmp / "all.txt", tmp, args.workers)
                _, (_, s_pss, _), out = run_measured([py, "-c", STOCK_TRAIN, str(tmp / "all.txt"), str(args.vocab),
                                                      str(tmp / "stock")])
                row.update(stock_chars=chars, stock_lines=lines, stock_train_s=float(out.split()[-1]), stock_pss=s_pss)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.workers} workers, {os.cpu_count()} cores, vocab {args.vocab:,}\n")
    print("| dump, MB of XML | ulmfit: sample, M chars (lines) | reading it, s | training, s | whole prepare, s "
          "| peak PSS of prepare | stock fastai: all text, M chars (lines) | training, s | peak PSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        stock = (f"{r['stock_chars'] / 1e6:.1f} ({r['stock_lines']:,}) | {r['stock_train_s']:.1f} | "
                 f"{r['stock_pss'] / gb:.2f} GB" if "stock_chars" in r else "- | - | -")
        print(f"| {r['xml_mb']:.0f} | {r['chars'] / 1e6:.1f} ({r['lines']:,}) | {r['read_seconds']:.1f} | "
              f"{r['train_seconds']:.1f} | {r['prepare_s']:.1f} | {r['prepare_pss'] / gb:.2f} GB | {stock} |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\n{b['xml_mb'] / a['xml_mb']:.1f}x the dump: ulmfit's peak PSS "
              f"x{b['prepare_pss'] / a['prepare_pss']:.2f}, "
              f"its SentencePiece training x{b['train_seconds'] / a['train_seconds']:.2f}"
              + (f"; stock fastai's training peak PSS x{b['stock_pss'] / a['stock_pss']:.2f}, "
                 f"time x{b['stock_train_s'] / a['stock_train_s']:.2f}" if "stock_pss" in a else ""))


if __name__ == "__main__":
    main()
