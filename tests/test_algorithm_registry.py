"""Every registered algorithm passes the same conformance checks, the moment it is registered."""

import pytest

from ssl_toolkit import SSLAlgorithm, get_algorithm, list_algorithms, register_algorithm
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.testing import check_algorithm


@pytest.mark.parametrize("algo", list_algorithms())
def test_algorithm_passes_the_conformance_checks(algo):
    # Learning is checked at the full digits budget by tests/test_learning_digits.py; the views check
    # (every declared view read, none left unused) applies to every algorithm.
    check_algorithm(algo, learning=False)


def test_the_shipped_algorithms_are_registered():
    shipped = {"supervised", "pi_model", "temporal_ensembling", "mean_teacher", "pseudo_label", "vat", "fixmatch"}
    assert shipped <= set(list_algorithms())


def test_wildcard_listing():
    assert list_algorithms("*teacher*") == ["mean_teacher"]


def test_duplicate_name_is_an_error():
    with pytest.raises(ValueError, match="already registered"):

        @register_algorithm("mean_teacher")
        class Impostor(SSLAlgorithm):
            pass


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserInputError, match="unknown algorithm 'mean_teachr'.*mean_teacher.*pi_model"):
        get_algorithm("mean_teachr")
