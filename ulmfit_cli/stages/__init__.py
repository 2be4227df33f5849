"""The three recipes, one module per training stage, each exposing `run(resolved, run, cbs) -> results`
(`resolved.cfg` the frozen config, `resolved.upstream` the run `init.from_run` names, `run` the run dir
being written, `cbs` more fastai callbacks for the learner)."""
