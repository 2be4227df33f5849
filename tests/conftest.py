"""Shared fixtures: a small MediaWiki XML dump, an easy labelled set, a CLI runner, and one trained chain
(forward and backward pretrain -> finetune-lm -> train-clf) that the test modules share."""
from __future__ import annotations

import bz2
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ulmfit_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ["CI"] = "true"  # no progress bars in test logs
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one PyTorch thread each (and in the processes they start),
    # or the threads of both spin against each other and every test runs many times slower
    os.environ["OMP_NUM_THREADS"] = "1"


# The longest test files first: `make test`'s two workers take files in collection order (with
# --no-loadscope-reorder: xdist would otherwise order files by their number of tests), and a long file left
# for the end keeps one worker busy while the other idles.
LONGEST_FIRST = ("test_gpu_check.py", "test_resume.py", "test_distributed.py", "test_real_data.py", "test_hostile.py",
                 "test_classifier_tasks.py", "test_small_data.py", "test_tasks_multi_regression.py",
                 "test_pretrained.py", "test_benchmarks.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def tiny_classifier_defaults() -> None:
    """Tests train classifiers on a couple of hundred rows in batches of 8, a few epochs: train-clf's floor of
    `train.min_steps` (400) would repeat every test's training rows several times an epoch. Off here, as
    configs/tiny.yaml shrinks the models (the key is train-clf's alone, so it cannot be in that overlay for
    every stage); the tests about it set it, and subprocesses that `tests/faults.py` does not start are
    given `--set train.min_steps=null`."""
    from ulmfit_cli.config import ClassifierConfig, ClassifierTrain
    ClassifierTrain.model_fields["min_steps"].default = None
    ClassifierTrain.model_rebuild(force=True)
    ClassifierConfig.model_rebuild(force=True)


tiny_classifier_defaults()


@pytest.fixture(autouse=True, scope="session")
def _token_store_cache(tmp_path_factory):
    """Token stores built by tests go to a temporary cache, never the user's ~/.cache/ulmfit."""
    os.environ["ULMFIT_CACHE"] = str(tmp_path_factory.mktemp("ulmfit-cache"))

WORDS = ("the history of science city river music film team war state church language family "
         "people north south early modern first large small world album game series island").split()
POS_CUES, NEG_CUES = ["great", "wonderful", "excellent"], ["awful", "terrible", "boring"]


VOCAB = WORDS + POS_CUES + NEG_CUES
SUCCESSOR = {w: VOCAB[(i * 7 + 3) % len(VOCAB)] for i, w in enumerate(VOCAB)}


def _chain(rng: random.Random, n: int) -> list[str]:
    words = [rng.choice(WORDS)]
    while len(words) < n:
        words.append(SUCCESSOR[words[-1]] if rng.random() < 0.8 else rng.choice(VOCAB))
    return words


def _article(rng: random.Random, title: str) -> str:
    # Words mostly follow a fixed successor, so the LM must read its input to predict (on uniformly
    # random words it learns to ignore the input and its encoder is no use to a classifier).
    # The classifier's cue words occur here too, so pretraining gives them rows of their own.
    sentences = [" ".join(_chain(rng, rng.randint(7, 15))).capitalize() + "." for _ in range(rng.randint(25, 40))]
    body = " ".join(sentences)
    return (f"{{{{Infobox thing|name={title}|size=42}}}}\n'''{title}''' is a [[Topic|topic]] "
            f"of ''interest''.<ref>A source, p. 3.</ref> <!-- hidden note -->\n== History ==\n{body}\n"
            f"{{| class=\"wikitable\"\n|-\n| cellA || cellB\n|}}\n[[Category:Things]]\n")


def write_dump(path: Path, n_articles: int = 12, seed: int = 0) -> Path:
    """A real MediaWiki export (schema 0.10): articles, a redirect and a template page."""
    from xml.sax.saxutils import escape
    rng = random.Random(seed)
    pages = []
    for i in range(n_articles):
        pages.append((f"Article {i}", 0, _article(rng, f"Article {i}"), False))
    pages.append(("Old name", 0, "#REDIRECT [[Article 0]]", True))
    pages.append(("Template:Infobox thing", 10, "{{{name}}} TEMPLATEBODY", False))
    xml = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">',
           "<siteinfo><sitename>Wikipedia</sitename></siteinfo>"]
    for pid, (title, ns, text, redirect) in enumerate(pages, 1):
        xml.append(f"<page><title>{escape(title)}</title><ns>{ns}</ns><id>{pid}</id>"
                   + ('<redirect title="Article 0" />' if redirect else "")
                   + f"<revision><id>{pid + 100}</id><text xml:space=\"preserve\">{escape(text)}</text>"
                   "</revision></page>")
    xml.append("</mediawiki>")
    data = "\n".join(xml).encode()
    if path.name.endswith(".bz2"):
        path.write_bytes(bz2.compress(data))
    else:
        path.write_bytes(data)
    return path


def cyrillic_sentences() -> dict[str, list[str]]:
    """Real text in a non-Latin script: the example sentences spaCy ships for Russian (news, and quotes from
    Dostoevsky, Chekhov, Turgenev, Ilf and Petrov, a film), Ukrainian and Serbian (spacy/lang/*/examples.py,
    MIT licence), by language."""
    from spacy.lang.ru.examples import sentences as ru
    from spacy.lang.sr.examples import sentences as sr
    from spacy.lang.uk.examples import sentences as uk
    return {"ru": list(ru), "uk": list(uk), "sr": list(sr)}


def write_cyrillic_export(path: Path, copies: int = 6) -> bytes:
    """A Russian Wikipedia export as the real dumps are (schema 0.10, xml:lang="ru", siteinfo with ruwiki's
    namespaces, pages with ids, revisions and `xml:space`), of articles made of `cyrillic_sentences()`
    (several permutations, so that a language model has sequences to learn); returns the XML."""
    from xml.sax.saxutils import escape
    rng = random.Random(0)
    sentences = [s for group in cyrillic_sentences().values() for s in group]
    pages = []
    for c in range(copies):
        order = sentences[:]
        rng.shuffle(order)
        for i in range(0, len(order), 6):
            title = f"Статья {c}-{i // 6}"
            body = " ".join(order[i:i + 6])
            pages.append((title, 0, f"'''{title}''' — [[статья|статья]].\n== Текст ==\n{body}\n"
                                    "[[Категория:Примеры]]\n"))
    pages.append(("Шаблон:Пример", 10, "{{{1}}}"))
    xml = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="0.10" xml:lang="ru">',
           "  <siteinfo>\n    <sitename>Википедия</sitename>\n    <dbname>ruwiki</dbname>\n"
           "    <generator>MediaWiki 1.46.0-wmf.1</generator>\n    <case>first-letter</case>\n"
           '    <namespaces>\n      <namespace key="0" case="first-letter" />\n'
           '      <namespace key="10" case="first-letter">Шаблон</namespace>\n    </namespaces>\n  </siteinfo>']
    for pid, (title, ns, text) in enumerate(pages, 1):
        xml.append(f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n"
                   f"    <revision>\n      <id>{pid + 1000}</id>\n      <model>wikitext</model>\n"
                   f"      <format>text/x-wiki</format>\n      <text bytes=\"{len(text.encode())}\" "
                   f"xml:space=\"preserve\">{escape(text)}</text>\n    </revision>\n  </page>")
    xml.append("</mediawiki>\n")
    data = "\n".join(xml).encode("utf-8")
    path.write_bytes(data)
    return data


def write_easy_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Two classes that a cue word separates perfectly, in varied filler."""
    import pandas as pd
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        cue = rng.choice(POS_CUES if label == "pos" else NEG_CUES)
        filler = [w for w in _chain(rng, rng.randint(5, 11)) if w not in POS_CUES + NEG_CUES]
        filler.insert(rng.randint(0, len(filler)), cue)
        rows.append({"text": " ".join(filler), "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_tasks_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Each text holds a positive cue, a negative cue, both or neither, as 0/1 columns `pos` and `neg`
    (multi-label), as `tags` ('pos;neg', 'pos', '' ...: one delimited column) and as a number `score`
    (1 + 2 pos + neg: regression)."""
    import pandas as pd
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        pos, neg = i % 2, (i // 2) % 2
        words = [w for w in _chain(rng, rng.randint(5, 11)) if w not in POS_CUES + NEG_CUES]
        for cue, on in ((POS_CUES, pos), (NEG_CUES, neg)):
            if on:
                words.insert(rng.randint(0, len(words)), rng.choice(cue))
        rows.append({"text": " ".join(words), "pos": pos, "neg": neg,
                     "tags": ";".join(t for t, on in (("pos", pos), ("neg", neg)) if on), "score": 1 + 2 * pos + neg})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def articles(path: Path, stats=None) -> list[str]:
    """The clean text of each kept article of a dump, in order (what `prepare` tokenizes, in one process)."""
    from ulmfit_cli.corpus.wikidump import DumpStats, clean_pages, iter_pages
    stats = stats if stats is not None else DumpStats()
    return list(clean_pages(iter_pages(path, stats), stats.skipped))


@pytest.fixture
def dump(tmp_path) -> Path:
    return write_dump(tmp_path / "tiny-pages-articles.xml.bz2")


@pytest.fixture
def easy_csv(tmp_path) -> Path:
    return write_easy_csv(tmp_path / "easy.csv")


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return invoke


def sigkill_after_first_row(args: list, table: Path, what: str, timeout: float = 240) -> None:
    """`python -m ulmfit_cli ARGS` in a subprocess, killed with SIGKILL once `table` (a CSV the command
    rewrites as it goes: tune's trials.csv, curve's curve.csv) has a row: in the middle of the next one."""
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit_cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + timeout
    while not (table.is_file() and len(pd.read_csv(table)) >= 1):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, f"no {what} finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


CLF_STAGES = "train.stages=[{freeze_to: -1, epochs: 3, lr: 0.05}, {freeze_to: 0, epochs: 8, lr: 0.02}]"


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """Trained once per session through the Python API, tiny models: forward and backward chains
    (`lm`, `ft`, `clf` and `lm-bwd`, `ft-bwd`, `clf-bwd`) on one dump and one labelled set; the
    forward and backward classifiers share the fine-tuned vocab, so they form an ensemble.
    Under `make test`'s two workers the first builds it and the other waits and reuses it.
    Tests must not change these run dirs (copy one to poison or continue it)."""
    import json

    from ulmfit_cli.files import exclusive
    root = tmp_path_factory.getbasetemp()
    tmp = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "chain"
    with exclusive(tmp, "the tests' chain", wait=True):
        done = tmp / "results.json"
        if not done.is_file():
            tmp.mkdir(exist_ok=True)
            done.write_text(json.dumps(_build_chain(tmp)))
        out = json.loads(done.read_text())
    return {k: Path(v) if isinstance(v, str) else v for k, v in out.items()}


def _build_chain(tmp: Path) -> dict:
    from ulmfit_cli import api
    dump = write_dump(tmp / "wiki-pages-articles.xml.bz2", n_articles=16)
    train, test = write_easy_csv(tmp / "train.csv", 200, seed=1), write_easy_csv(tmp / "test.csv", 60, seed=2)
    out = {"tmp": str(tmp), "dump": str(dump), "train": str(train), "test": str(test), "results": {}}
    for suffix, backwards in (("", "false"), ("-bwd", "true")):
        lm, ft, clf = (tmp / f"{name}{suffix}" for name in ("lm", "ft", "clf"))
        way = [f"data.backwards={backwards}", "model.drop_mult=0.2"]
        out["results"][f"pretrain{suffix}"] = api.train(
            "pretrain", [TINY], [f"data.source={dump}", "train.epochs=4", "train.lr=0.03", *way], run_dir=lm)
        out["results"][f"finetune-lm{suffix}"] = api.train(
            "finetune-lm", [TINY], [f"data.train={train}", f"init.from_run={lm}", "train.epochs=2", *way], run_dir=ft)
        out["results"][f"train-clf{suffix}"] = api.train(
            "train-clf", [TINY], [f"data.train={train}", f"data.test={test}", f"init.from_run={ft}",
                                  "data.valid_pct=0.25", CLF_STAGES, *way], run_dir=clf)
        out.update({f"lm{suffix}": str(lm), f"ft{suffix}": str(ft), f"clf{suffix}": str(clf)})
    return out


# `python -c NO_TORCH ARGS` is `ulmfit ARGS` where `import torch` / `import fastai` / `import sklearn` / `import
# captum` fail, as in a deployment that never installed them (the runtime's requirements-runtime.txt).
NO_TORCH = """
import sys
class _Gone:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "fastai", "torchvision", "sklearn", "captum"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Gone())
from ulmfit_cli.cli import app
app(sys.argv[1:], prog_name="ulmfit")
"""
