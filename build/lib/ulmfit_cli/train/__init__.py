"""The training engine: learners, loaders, checkpoints, precision, optimizer, weight dropout, device metrics,
distributed training and the callbacks every stage shares. The recipes (`ulmfit_cli.recipes`) compose
these."""
