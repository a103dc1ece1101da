"""The small-scale reproduction studies of the papers' claims (``docs/results.md``):
``latentae study NAME`` or ``python -m latentae.studies.MODULE``; ``common.py`` is their
shared harness (train with ``latentae.train``, evaluate with
``latentae.eval.reconstruction``, write ``results.json`` + ``table.md`` + plots)."""
