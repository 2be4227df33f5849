"""The classifier layer, beneath the recipes and inference (it imports neither): the task (`task.Task`, and
its torch-free outputs side, `outputs`), reading a classifier's splits (`splits`), scoring a model on them
(`scoring.score`), the linear baseline (`baseline` fits it, `linear` keeps and applies it), the blend, the
self-training selection and the forward+backward pair format (`pairs`)."""
