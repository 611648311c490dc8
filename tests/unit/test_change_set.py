"""The change set's bookkeeping (hvfs.manager.changes): what the record of served
mutations says, for sequences the VM tests cannot force (the cap, renames of directories)."""

from __future__ import annotations

from hvfs.manager.changes import ChangeSet, render


def _listed(changes: ChangeSet) -> list[str]:
    return [f"{c.kind} {c.path}" for c in changes.changes()]


def test_added_then_removed_leaves_nothing() -> None:
    changes = ChangeSet()
    changes.note("/tmp/x", False, True)
    changes.note("/tmp/x", True, False)  # the second note's "existed" is not the first change's
    assert _listed(changes) == []


def test_removed_then_made_again_is_changed() -> None:
    changes = ChangeSet()
    changes.note("/etc/hostname", True, False)
    changes.note("/etc/hostname", False, True)
    assert _listed(changes) == ["C /etc/hostname"]


def test_parents_of_names_added_or_removed_are_changed_up_to_the_root() -> None:
    changes = ChangeSet()
    changes.note("/a/b/c", False, True)
    changes.note("/a/b", False, True)
    changes.note("/etc/passwd", True, True)  # content only: its directory's entries are the same
    assert _listed(changes) == ["C /a", "A /a/b", "A /a/b/c", "C /etc/passwd"]


def test_what_was_beneath_a_moved_directory_is_gone_from_there() -> None:
    changes = ChangeSet()
    changes.note("/d", False, True)
    changes.note("/d/f", False, True)
    changes.moved_away("/d")
    changes.note("/d", False, False)
    changes.note("/e", False, True)
    assert _listed(changes) == ["A /e"]


def test_the_cap_truncates_and_says_so() -> None:
    changes = ChangeSet(limit=3)
    for i in range(5):
        changes.note(f"/f{i}", False, True)
    changes.note("/f0", False, False)  # a path already noted is still followed
    assert _listed(changes) == ["A /f1", "A /f2"]
    document = changes.document()
    assert document["truncated"] is True and document["lost"] == 2
    assert "2 more changes were not recorded" in render(document)


def test_a_bounded_document_counts_what_it_omits() -> None:
    changes = ChangeSet()
    for i in range(100):
        changes.note(f"/dir/name-{i:03}", False, True)
    document = changes.document(budget=1000)
    assert 0 < len(document["changes"]) < 101 and document["omitted"] == 101 - len(document["changes"])
    assert f"({document['omitted']} more changes" in render(document)


def test_notes_folded_by_c_count_as_the_notes_they_stand_for() -> None:
    """note_queue.h folds a note of a path that exists into the one before it of that path
    (repeats): applied, they change what those notes would have, lost ones counted alike."""
    folded, one_by_one = ChangeSet(limit=2), ChangeSet(limit=2)
    for path, existed, exists, repeats in [("/a", False, True, 3), ("/b", True, True, 2), ("/c", False, True, 4)]:
        folded._note_locked(path, existed, exists, repeats)
        for k in range(1 + repeats):
            one_by_one.note(path, existed if k == 0 else True, exists)
    assert _listed(folded) == _listed(one_by_one) == ["A /a", "C /b"]
    assert folded.document() == one_by_one.document() and folded.lost == 5
