"""The training side of duotune, in the order of a run: ``recipe`` -> ``data/`` -> ``model/`` -> ``run/``;
``commands/`` (the CLI and what comes after training) and ``demo/`` (the bundled model and data)."""
