"""The recipe: everything that can change a checkpoint's bytes (the specs, the data's batches, the model, the loop, the
schedule, the checkpoint and its lineage). The train stages depend on this package and src/models alone, and a
checkpoint's lineage carries their code id; it imports nothing of chunktrain outside it."""
