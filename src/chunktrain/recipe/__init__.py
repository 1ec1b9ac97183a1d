"""The training runtime every stage shares: params and specs, checkpoints, the model, the splits."""
