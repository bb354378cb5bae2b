"""Every registered algorithm passes the same conformance checks, the moment it is registered."""

import pytest

from ssl_toolkit import SSLAlgorithm, get_algorithm, list_algorithms, register_algorithm
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.testing import check_algorithm


@pytest.mark.parametrize("algo", list_algorithms())
def test_algorithm_trains_with_finite_losses_changes_student_and_round_trips_state(algo):
    check_algorithm(algo)


def test_the_four_paper_algorithms_are_registered():
    assert {"supervised", "pi_model", "temporal_ensembling", "mean_teacher"} <= set(list_algorithms())


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
