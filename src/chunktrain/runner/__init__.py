"""One chunk of training: the loop, its schedule, processes, snapshots and stopping."""
