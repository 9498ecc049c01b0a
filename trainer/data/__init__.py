"""The data path: ``load`` (files and row formats) -> ``templates`` (chat templates) -> ``encode`` (tokens
and labels) -> ``prepare`` (what a run trains and evaluates on)."""
