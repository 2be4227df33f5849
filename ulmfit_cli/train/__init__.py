"""The training engine: learners, loaders, checkpoints, precision, optimizer, weight dropout, device metrics,
distributed training and the callbacks every stage shares. Stages (`ulmfit_cli.stages`) compose these."""
