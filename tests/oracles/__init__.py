"""The project's own test oracles (they do not ship): an independent pure-Python scanner
(:mod:`oracles.refscan`), field-by-field scan comparison (:mod:`oracles.compare`) and
hypothesis strategies for fake hosts (:mod:`oracles.strategies`)."""
