"""The VLN-CE task: episodes and datasets, measures, the task loop and the embedded benchmark."""
