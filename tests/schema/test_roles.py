"""Roles: the one object that carries a log's column roles from a public function down."""
import dataclasses

import pandas as pd
import pytest

from causalrec.schema import InteractionLog, Roles, SchemaError


@pytest.fixture
def frame():
    return pd.DataFrame({"item": ["a", "b", "a"], "t": [0, 1, 1], "y": [1.0, 0.0, 2.0],
                         "x": [0.5, 1.5, 2.5], "region": ["n", "s", "n"], "g": ["u", "v", "u"],
                         "user": [1, 2, 3]})


def test_from_arguments_normalises_like_the_log(frame):
    roles = Roles.from_arguments(item="item", treatment="t", outcome="y", confounders="x",
                                 categorical=["region"], unit="user")
    assert roles.item == "item" and roles.confounders == ("x",) and roles.text == ()
    log = InteractionLog.from_roles(frame, roles)
    assert log.roles == roles  # the log hands back the roles it was built from
    assert (log.item, log.confounders, log.categorical, log.unit) == (
        "item", ["x"], ["region"], "user")


def test_by_joins_the_item_keys_and_leaves_the_confounders(frame):
    roles = Roles.from_arguments(item="item", by="g", treatment="t", outcome="y",
                                 confounders=["x"], categorical=["region", "g"])
    assert roles.item == ("item", "g") and roles.categorical == ("region",)
    assert InteractionLog.from_roles(frame, roles).item_columns == ["item", "g"]


def test_mapping_view_is_role_to_columns_of_the_set_roles(frame):
    log = InteractionLog(frame, item="item", treatment="t", outcome="y", confounders=["x"],
                         user="user")
    assert dict(log.roles) == {"item": ["item"], "treatment": ["t"], "outcome": ["y"],
                               "confounders": ["x"], "user": ["user"]}
    assert "text" not in log.roles and log.roles["item"] == ["item"]


def test_roles_are_frozen_and_hashable():
    roles = Roles.from_arguments(item=["item", "g"], treatment="t", outcome="y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        roles.treatment = "other"
    assert hash(roles) == hash(Roles.from_arguments(item=("item", "g"), treatment="t", outcome="y"))


def test_the_log_door_still_checks_roles_built_from_arguments(frame):
    roles = Roles.from_arguments(item="item", treatment="t", outcome="y", confounders="missing")
    with pytest.raises(SchemaError, match="missing"):
        InteractionLog.from_roles(frame, roles)
