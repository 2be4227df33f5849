"""The pretraining corpus named by `data.source`: a Wikipedia dump, a text file, or a folder.

A folder with `*train*` and `*valid*` files (WikiText-103's `wiki.train.tokens`,
`wiki.valid.tokens`) keeps that split; otherwise its files are pooled.
"""
from __future__ import annotations

from pathlib import Path

from ulmfit_cli.console import info, progress
from ulmfit_cli.corpus.tables import read_text_documents
from ulmfit_cli.corpus.wikidump import DumpStats, is_dump, iter_articles
from ulmfit_cli.errors import UlmfitError

TEXT_SUFFIXES = (".txt", ".tokens", ".raw")


def _documents(path: Path, max_docs: int | None, min_chars: int, encoding: str) -> list[str]:
    if is_dump(path):
        stats = DumpStats()
        docs = []
        for text in progress(iter_articles(path, stats, min_chars), desc="extracting articles", unit="art"):
            docs.append(text)
            if max_docs and len(docs) >= max_docs:
                break
        info(f"{path.name}: {stats.pages} pages read, {stats.articles} articles kept, skipped: "
             + ", ".join(f"{k} {v}" for k, v in stats.skipped.items()))
        return docs
    docs = read_text_documents(path, "data.source", encoding)
    return docs[:max_docs] if max_docs else docs


def pretrain_documents(path: Path, max_docs: int | None = None, min_chars: int = 0, encoding: str = "utf-8"
                       ) -> tuple[list[str], list[str] | None]:
    """(documents, validation documents or None when the split is left to `data.valid_pct`)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and (p.name.endswith(TEXT_SUFFIXES) or is_dump(p)))
        if not files:
            raise UlmfitError(f"data.source: {path} holds no {', '.join(TEXT_SUFFIXES)} or dump files")
        train = [f for f in files if "train" in f.name]
        valid = [f for f in files if "valid" in f.name]
        if train and valid:
            return ([d for f in train for d in _documents(f, max_docs, min_chars, encoding)],
                    [d for f in valid for d in _documents(f, max_docs, min_chars, encoding)])
        return [d for f in files for d in _documents(f, max_docs, min_chars, encoding)], None
    return _documents(path, max_docs, min_chars, encoding), None
