"""The three recipes, one module per training stage, each exposing `plan(resolved, run, cbs) -> Plan`
(`resolved.cfg` the frozen config, `resolved.upstream` the run `init.from_run` names, `run` the run dir
being written, `cbs` more fastai callbacks for the learner): the learner, its phases and what it writes
once trained, which `api.run_stage` trains (`train.checkpoints.fit_plan`) and `ulmfit lr-find` sweeps."""
