"""Reference-equivalence checks: ``more`` beside the authors' code (zwyang6/MoRe), imported at run time.

Every module here except ``common`` exposes ``checks(ref) -> list[Row]``; ``tools/check_reference.py`` runs them.
"""
