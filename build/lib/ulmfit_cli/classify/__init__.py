"""The classifier layer, beneath the recipes and inference (it imports neither): the task (`task.Task`),
reading a classifier's splits (`splits`), scoring a model on them (`scoring.score`), the linear baseline
(`baseline`) and the forward+backward pair format (`pairs`)."""
