"""`duotune web`: the browser UI (Gradio), one module per tab in ``components/``.

The Train tab is generated from the Recipe dataclass (``form``), runs the very `train` command line the
CLI would run as a detached process (``runner``) and re-attaches to it by reading its output_dir
(``monitor``). Importing this package imports no gradio; ``app`` and ``components`` do.
"""
