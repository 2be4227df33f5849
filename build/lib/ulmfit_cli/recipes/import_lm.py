"""`ulmfit import-lm`: a published AWD-LSTM language model (fastai's WT103, a fastai-format folder or archive,
a fastai_ulmfit archive: `train/fastai_format.py` reads them) becomes a pretrain-style run dir that
`init.from_run` takes (finetune-lm, train-clf, generate). Archives are unpacked in a temporary folder, only
below it."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ulmfit_cli.config import PretrainConfig, validate
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import ARCHIVES, extract_archive, reads
from ulmfit_cli.layout import ENCODER, LM_WEIGHTS, PRETRAIN_STAGE, RESULTS, SP_MODEL, VOCAB
from ulmfit_cli.runs import open_run
from ulmfit_cli.train.fastai_format import KEY, NAMED, fetch, find, lm_state, read_vocab_file, sizes, to_model


def import_lm(source: str, out: Path, backwards: bool | None = None, force: bool = False) -> dict:
    """Convert `source` into a pretrain-style run dir at `out`; returns its results."""
    with tempfile.TemporaryDirectory(prefix="ulmfit-import-") as tmp:
        archive = None  # what messages name in place of the temporary folder it is unpacked in
        if source in NAMED:
            named_backwards = NAMED[source][1]
            if backwards is not None and backwards != named_backwards:
                raise UlmfitError(f"--backwards: {source} is a "
                                  f"{'backward' if named_backwards else 'forward'} model")
            folder, backwards = fetch(source), named_backwards
            reads(folder, "SOURCE")  # fastai's download cache: never an output of this command
        else:
            path = Path(source)
            reads(path, "SOURCE")
            if not path.exists():
                raise UlmfitError(f"{KEY}: {source} is neither a file, a folder nor one of: "
                                  f"{', '.join(NAMED)}")
            if path.is_file():
                if not path.name.lower().endswith(ARCHIVES):
                    raise UlmfitError(f"{KEY}: {path} is not a folder or an archive ({', '.join(ARCHIVES)})")
                folder, archive = Path(tmp) / "unpacked", path
                extract_archive(path, folder, KEY)
                # no members, or folders only: nothing unpacked to look in (name the archive, not tmp)
                if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
                    raise UlmfitError(f"{KEY}: {path} is an empty archive (no files in it): an interrupted "
                                      f"download? Fetch it again")
            else:
                folder = path
        found = find(folder, backwards, archive)
        vocab = read_vocab_file(found.vocab)
        state = lm_state(found.weights)
        arch = sizes(state, found.weights)
        model = to_model(state, vocab, arch, found.weights)
        data = {"source": str(source), "backwards": found.backwards,
                "tokenizer": "sentencepiece" if found.sp_model else "spacy"}
        if found.lang:
            data["lang"] = found.lang
        cfg = validate(PretrainConfig,
                       {"data": data, "model": arch, "run": {"dir": str(out), "name": out.name}},
                       "imported model's config")
        results = {"imported_from": str(source), "weights": found.weights.name, "vocab": found.vocab.name,
                   "vocab_size": len(vocab), **arch, "backwards": found.backwards}
        with open_run(PRETRAIN_STAGE, cfg, {}, force, meta={"imported_from": str(source)}) as run:
            run.write_json(VOCAB, vocab)
            run.save_weights(LM_WEIGHTS, model.state_dict())
            run.save_weights(ENCODER, model[0].state_dict())
            run.copy_in(found.sp_model, SP_MODEL)
            run.write_json(RESULTS, results)
    return results


