"""The model: the text encoder (:mod:`.encoder`), the torch router E(x) with one key per LLM
(:mod:`.router`) and the training losses as pure functions (:mod:`.losses`).

Importing this package is light; torch loads with the submodules.
"""
