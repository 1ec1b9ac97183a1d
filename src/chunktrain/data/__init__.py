"""Stage generate's work: a source table to train, val and test splits, and the synthetic table."""
