"""The runner: how a chunk runs (here, under torchrun or as SLURM jobs; threads, stop signals, snapshot timing,
progress, live charts). It changes no checkpoint's bytes, so no stage depends on it: fixing it retrains nothing."""
