"""Fuzz targets for every parser of wgpy that takes outside bytes (issue 8).

``python -m fuzz TARGET -n N`` runs N inputs through one target: coverage-guided with atheris
(libFuzzer) when it is installed (``pip install -e '.[fuzz]'``), else with a seeded random
mutator over the same corpus (no coverage feedback; CI's brief runs work either way). Targets
are listed in :data:`fuzz.driver.TARGETS`; each module has ``test_one_input(data)`` (raises
only on a real bug: an escaping exception or a broken invariant) and ``seeds()``.
"""
