"""The boto3 Auto Scaling adapter against moto in server mode."""

from __future__ import annotations

import pytest

from chalicelib.autoscaling import Boto3AutoScaling
from sim.aws import create_group


def test_membership_and_size(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    members = create_group(aws, f"jibri-{unique}", desired=2, minimum=1, maximum=6)
    others = create_group(aws, f"other-{unique}", desired=1)
    group = Boto3AutoScaling(aws.client("autoscaling"), f"jibri-{unique}")
    assert all(group.is_member(i) for i in members)
    assert not group.is_member(others[0])
    assert not group.is_member("i-0deadbeefdeadbeef")
    size = group.group_size()
    assert (size.desired, size.minimum, size.maximum) == (2, 1, 6)


def test_a_missing_group_is_named(aws, unique: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError, match=f"nope-{unique}"):
        Boto3AutoScaling(aws.client("autoscaling"), f"nope-{unique}").group_size()
