"""One training run: ``plan`` (device, precision, framework) -> ``outputs`` (the output dir) ->
``framework`` (whose Trainer) with ``lifecycle`` (signals, checkpoints) and ``tracking`` (logs, SwanLab),
all in order in ``workflow``; ``launch`` re-runs a command under torchrun."""
