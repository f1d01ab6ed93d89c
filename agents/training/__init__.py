"""Training of the learned VLN-CE policies: trajectory store, rollout collection, trainers."""
