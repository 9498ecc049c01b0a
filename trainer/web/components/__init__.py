"""The tabs and parts of the web UI, one module each: ``top`` (title, language), ``train`` (the recipe
form, data preview, start/abort/resume), ``progress`` (progress bar, plots, log), ``evaluate``,
``chat``, ``export`` and ``runs``."""
