"""The three recipes, one module per training stage, each exposing `run(cfg, run, upstream, cbs) -> results`
(`cfg` resolved and frozen, `run` the run dir being written, `upstream` the run `init.from_run` names)."""
