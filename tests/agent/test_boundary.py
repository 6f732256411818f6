"""recordings_dir is resolved once through directories only root can change, then pinned to what was found."""

from __future__ import annotations

import os

import pytest

from agent.boundary import RecordingsDirUnusable, RecordingsRoot, default_trusted_owners, resolve_recordings_dir
from tests.agent.ownership import OwnedBySomeoneElse

TRUSTED = default_trusted_owners()  # root and the user running the tests, who owns everything they make


@pytest.fixture
def tree(tmp_path):
    """srv/recordings under the test's temporary directory, each made by the user running the tests."""
    recordings = tmp_path / "srv" / "recordings"
    recordings.mkdir(parents=True)
    return recordings


def test_a_trusted_path_resolves_to_the_directory_found_there(tree):
    root = resolve_recordings_dir(str(tree), TRUSTED)
    info = os.stat(tree)
    assert root == RecordingsRoot(os.path.realpath(tree), info.st_dev, info.st_ino)
    descriptor = root.open()
    try:
        assert os.fstat(descriptor).st_ino == info.st_ino
    finally:
        os.close(descriptor)


def test_recordings_dir_itself_is_jibris_and_may_be_written_by_it(tree, monkeypatch):
    tree.chmod(0o2775)
    OwnedBySomeoneElse(monkeypatch, tree)
    assert resolve_recordings_dir(str(tree), TRUSTED).path == str(tree)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_parent_writable_by_others_is_refused(tree, mode):
    tree.parent.chmod(mode)
    with pytest.raises(RecordingsDirUnusable, match=f"{tree.parent} is writable by its group or by others"):
        resolve_recordings_dir(str(tree), TRUSTED)


def test_a_parent_owned_by_someone_else_is_refused_unless_trusted(tree, monkeypatch):
    OwnedBySomeoneElse(monkeypatch, tree.parent)
    other = os.stat(tree.parent, follow_symlinks=False).st_uid  # as it now looks
    with pytest.raises(RecordingsDirUnusable, match=f"{tree.parent} is owned by uid {other}, not by root"):
        resolve_recordings_dir(str(tree), TRUSTED)
    assert resolve_recordings_dir(str(tree), TRUSTED | {other}).path == str(tree)


def test_a_sticky_parent_is_trusted_only_for_what_root_owns_in_it(tree, monkeypatch):
    tree.parent.chmod(0o1777)  # as /tmp: anyone may add names, no one may rename another's
    assert resolve_recordings_dir(str(tree), TRUSTED).path == str(tree)
    OwnedBySomeoneElse(monkeypatch, tree)  # recordings_dir of someone else's, who could rename it away
    with pytest.raises(RecordingsDirUnusable, match="sticky"):
        resolve_recordings_dir(str(tree), TRUSTED)


def test_a_link_is_followed_only_from_a_directory_no_one_else_can_write(tree, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    (links / "recordings").symlink_to(tree)
    (links / "relative").symlink_to(os.path.join("..", "srv", "recordings"))
    assert resolve_recordings_dir(str(links / "recordings"), TRUSTED).path == str(tree)
    assert resolve_recordings_dir(str(links / "relative"), TRUSTED).path == str(tree)
    links.chmod(0o777)  # whoever can write there chose where the link points
    with pytest.raises(RecordingsDirUnusable, match=f"{links} is writable"):
        resolve_recordings_dir(str(links / "recordings"), TRUSTED)


def test_a_link_target_is_checked_like_any_other_path(tree, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    (links / "recordings").symlink_to(tree)
    tree.parent.chmod(0o777)
    with pytest.raises(RecordingsDirUnusable, match=f"{tree.parent} is writable"):
        resolve_recordings_dir(str(links / "recordings"), TRUSTED)


def test_a_link_to_the_root_directory_is_refused(tmp_path):
    (tmp_path / "recordings").symlink_to("/")
    with pytest.raises(RecordingsDirUnusable, match="root directory"):
        resolve_recordings_dir(str(tmp_path / "recordings"), TRUSTED)


def test_a_missing_directory_is_not_resolved(tmp_path):
    with pytest.raises(RecordingsDirUnusable, match="cannot be resolved"):
        resolve_recordings_dir(str(tmp_path / "absent" / "recordings"), TRUSTED)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RecordingsDirUnusable, match="as a directory"):
        resolve_recordings_dir(str(tmp_path / "file"), TRUSTED)


@pytest.mark.parametrize(
    ("replacement", "said"),
    [
        ("another directory", "no longer the directory the agent found there"),
        ("a link to the directory", "cannot be opened"),
        ("nothing", "cannot be opened"),
    ],
)
def test_a_pinned_directory_that_was_replaced_is_refused(tree, tmp_path, replacement, said):
    root = resolve_recordings_dir(str(tree), TRUSTED)
    tree.rename(tmp_path / "moved")
    if replacement == "another directory":
        tree.mkdir()
    elif replacement == "a link to the directory":
        tree.symlink_to(tmp_path / "moved")
    with pytest.raises(RecordingsDirUnusable, match=said):
        root.open()
    if tree.is_symlink():
        tree.unlink()
    elif replacement != "nothing":
        tree.rmdir()
    (tmp_path / "moved").rename(tree)  # back in place: the very directory again
    os.close(root.open())
