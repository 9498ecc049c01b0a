"""The command line (``cli``) and the sub-commands beside training: preview, parity, merge, chat, eval,
env."""
