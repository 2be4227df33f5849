"""Resolve once: stage, config files, `--set` overrides, `--run-dir` and `--resume` become one frozen config.

Everything a stage reads comes from the result: the AWD-LSTM sizes and the tokenizer's language taken from
`init.from_run` (or the paper's sizes, English), the run dir, and the device and precision that will run
(`auto` decided here). config.yaml records exactly this; what the user asked for before it was decided
(`run.device: auto`) is kept in its `_meta.requested`, so that passing a run's config.yaml back (or
`--resume` on another machine) asks again rather than insisting on the old machine's answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ulmfit_cli.config import ARCH_KEYS, PretrainModel, StageConfig, load_config, read_inputs, validate
from ulmfit_cli.corpus.tokenize import check_lang
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import reads, staging_dir
from ulmfit_cli.runs import UpstreamRun, read_run, resume_config
from ulmfit_cli.train.device import decide

PAPER_ARCH = PretrainModel().sizes()  # the pretrain defaults: the paper's sizes


@dataclass(frozen=True)
class Resolved:
    stage: Any                    # the `recipes.Stage` record
    cfg: StageConfig              # frozen; run.dir, sizes, device and precision decided
    upstream: UpstreamRun | None  # the run init.from_run names, read and checked
    requested: dict               # {dotted key: value as asked} for the values decided here

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run.dir)


def config_of(stage, configs=(), overrides=(), run_dir: Path | None = None, resume: bool = False,
              own: bool = False) -> StageConfig:
    """The stage's typed config from YAML files and `--set` overrides (with `--resume` and no file: the
    run's own config.yaml), not yet resolved: what code derives configs from (`config.derive`). The config
    files and the paths the config names are the command's inputs (`files.reads`), except a config the run
    or search continues from (`own`, and the run's own config.yaml on --resume), which it rewrites."""
    configs = list(configs)
    own = own or (resume and not configs)
    if resume and not configs:
        configs = [resume_config(resumed_dir(run_dir))]
    cfg = load_config(stage.config, configs, list(overrides), f"{stage.name} config")
    final = run_dir_of(cfg, run_dir)  # a resumed run's own config (`--config RUN/config.yaml`) is no input
    continued = [final.resolve(), staging_dir(final).resolve()] if resume else []
    for path in ([] if own else configs):
        if not any(folder in Path(path).resolve().parents for folder in continued):  # not the run's own
            reads(path, "the config file")
    read_inputs(cfg)
    return cfg


def resumed_dir(run_dir: Path | None) -> Path:
    """The run dir `--resume` continues: it must be named."""
    if run_dir is None:
        raise UlmfitError("--resume needs --run-dir (or the --config of the run)")
    return Path(run_dir)


def run_dir_of(cfg: StageConfig, run_dir: Path | None = None) -> Path:
    """Where a run goes: --run-dir, else run.dir, else runs/<run.name>."""
    if run_dir is not None:
        return Path(run_dir)
    return Path(cfg.run.dir) if cfg.run.dir is not None else Path("runs") / cfg.run.name


def search_dir_of(cfg: StageConfig, run_dir: Path | None = None) -> Path:
    """Where `ulmfit tune` searches: --run-dir, else runs/<run.name>-tune (never run.dir, which is the final
    classifier's, as best.yaml keeps it)."""
    return Path(run_dir) if run_dir is not None else Path("runs") / f"{cfg.run.name}-tune"


def resolve(stage, configs=(), overrides=(), run_dir: Path | None = None, resume: bool = False,
            cfg: StageConfig | None = None) -> Resolved:
    """`stage` (a `recipes.Stage`) resolved from files and overrides, or from `cfg`, a typed config
    already built (e.g. derived in code with `config.derive`)."""
    if cfg is None:
        cfg = config_of(stage, configs, overrides, run_dir, resume)
    upstream = upstream_of(stage, cfg)
    data = cfg.model_dump()
    data["model"].update(inherit_arch(cfg.model, upstream))
    data["data"]["lang"] = inherit_lang(cfg.data, upstream)
    data["run"]["dir"] = str(run_dir_of(cfg, run_dir))
    if upstream is not None and Path(data["run"]["dir"]).resolve() == upstream.path.resolve():
        raise UlmfitError(f"run dir {data['run']['dir']} is init.from_run: a run cannot replace the run it "
                          f"starts from (not even with --force); choose another --run-dir")
    asked = {"run.device": cfg.run.device, "run.precision": cfg.run.precision}
    data["run"]["device"], data["run"]["precision"] = decide(cfg.run.device, cfg.run.precision)
    requested = {k: v for k, v in asked.items() if data["run"][k.split(".")[1]] != v}
    return Resolved(stage, validate(stage.config, data, f"{stage.name} config"), upstream, requested)


def upstream_of(stage, cfg: StageConfig) -> UpstreamRun | None:
    """The run `init.from_run` names (checked to be a finished LM run of the same direction), or None."""
    init = getattr(cfg, "init", None)
    if init is None or not init.from_run:
        return None
    upstream = read_run(init.from_run, "init.from_run", stage.upstream, stage.upstream_weights)
    if upstream.backwards != cfg.data.backwards:
        direction = lambda b: "backwards (reversed text)" if b else "forwards"  # noqa: E731
        raise UlmfitError(f"init.from_run: {upstream.path} was trained {direction(upstream.backwards)}, but "
                          f"this config has data.backwards: {str(cfg.data.backwards).lower()}; set "
                          f"data.backwards={str(upstream.backwards).lower()}")
    return upstream


def inherit_lang(data, upstream: UpstreamRun | None) -> str:
    """The word tokenizer's language: the config's, else the upstream run's (else English); a config that
    contradicts the upstream run is refused, since its vocabulary was made with the other language's rules."""
    theirs = upstream.lang if upstream is not None else None
    if data.lang and theirs and data.lang != theirs:
        raise UlmfitError(f"data.lang: the config says {data.lang!r}, but init.from_run {upstream.path} was "
                          f"tokenized as {theirs!r}; leave data.lang unset to take it from the run")
    lang = data.lang or theirs or "en"
    subwords = (getattr(data, "tokenizer", "spacy") == "sentencepiece"
                or (upstream is not None and upstream.sp_model))
    if not subwords:
        check_lang(lang, "data.lang")
    return lang


def inherit_arch(model, upstream: UpstreamRun | None) -> dict:
    """The AWD-LSTM sizes: those the config sets, the rest from the upstream run (or the paper's);
    sizes that contradict the upstream run are refused."""
    if upstream is None:
        return {k: PAPER_ARCH[k] if getattr(model, k) is None else getattr(model, k) for k in ARCH_KEYS}
    theirs = upstream.arch()
    clash = [f"model.{k}: config says {getattr(model, k)}, {upstream.path} has {theirs[k]}"
             for k in ARCH_KEYS if getattr(model, k) is not None and getattr(model, k) != theirs[k]]
    if clash:
        raise UlmfitError("init.from_run: the run's architecture does not match the config:\n  "
                          + "\n  ".join(clash) + "\n(leave model.emb_sz/n_hid/n_layers unset to take them "
                                                 "from the run)")
    return theirs
