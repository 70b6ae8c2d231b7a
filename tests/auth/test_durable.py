"""auth's durable copy on a real file system (`durable.DurableState`), and the pure restore
policy (`recovery.decide`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from services.auth.durable import LOGOUTS_FILE, SESSION_FILE, DurableState
from services.auth.recovery import (
    ApplyLogout,
    DropCopy,
    MarkCopyInvalid,
    Restore,
    Seen,
    StoreEnvToken,
    decide,
    logout_settled,
)
from shared.ist import next_token_expiry
from shared.redis_contract import StoredSession

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
T = int(NOW.timestamp())


def login(user: str = "AB1234", issued: int = T, **changes: object) -> StoredSession:
    expires = int(next_token_expiry(dt.datetime.fromtimestamp(issued, dt.UTC)).timestamp())
    values: dict[str, object] = {
        "user_id": user,
        "access_token": f"token-of-{user}-{issued}",
        "issued_at": issued,
        "expires_at": expires,
    }
    values.update(changes)
    return StoredSession.model_validate(values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- the files ---------------------------------------------------------------------------------


def test_a_login_is_kept_in_a_private_file_and_read_back(tmp_path: Path) -> None:
    directory = tmp_path / "auth"
    state = DurableState(directory)
    session = login()
    state.keep(session)

    assert state.session() == session
    assert DurableState(directory).session() == session  # another process reads the same
    assert mode(directory) == 0o700
    assert mode(directory / SESSION_FILE) == 0o600
    assert [p.name for p in directory.iterdir()] == [SESSION_FILE]  # no temporary left
    assert json.loads((directory / SESSION_FILE).read_bytes()) == session.model_dump()


def test_a_failed_write_leaves_the_old_copy_whole_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = DurableState(tmp_path)
    first = login()
    state.keep(first)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        state.keep(login(issued=T + 60))
    monkeypatch.undo()

    assert state.session() == first
    assert [p.name for p in tmp_path.iterdir()] == [SESSION_FILE]


def test_an_unreadable_copy_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / SESSION_FILE).write_text("{not json")
    (tmp_path / LOGOUTS_FILE).write_text('["a list"]')
    state = DurableState(tmp_path)
    assert state.session() is None
    assert state.logouts() == {}
    assert state.forget()  # and a logout removes it all the same
    assert not (tmp_path / SESSION_FILE).exists()


def test_forget_removes_only_the_named_users_copy(tmp_path: Path) -> None:
    state = DurableState(tmp_path)
    state.keep(login("AB1234"))
    assert not state.forget("ZZ9999")
    assert state.session() is not None
    assert state.forget("AB1234")
    assert state.session() is None
    assert not state.forget("AB1234")


def test_the_copy_is_marked_invalid_only_for_the_same_login(tmp_path: Path) -> None:
    state = DurableState(tmp_path)
    session = login()
    state.keep(session)
    assert not state.mark_invalid(login(issued=T - 60))  # an older login of the same user
    assert state.session() == session
    assert state.mark_invalid(session)
    copy = state.session()
    assert copy is not None and not copy.valid
    assert not state.mark_invalid(session)  # already


def test_pending_logouts_are_recorded_cleared_and_voided_by_a_new_login(tmp_path: Path) -> None:
    state = DurableState(tmp_path)
    state.add_logout("AB1234", T)
    state.add_logout("CD5678", T + 1)
    assert mode(tmp_path / LOGOUTS_FILE) == 0o600
    assert DurableState(tmp_path).logouts() == {"AB1234": T, "CD5678": T + 1}

    state.logout_done("CD5678", T)  # not the recorded one: a later logout is kept
    assert state.logouts() == {"AB1234": T, "CD5678": T + 1}
    state.logout_done("CD5678", T + 1)
    assert state.logouts() == {"AB1234": T}

    state.keep(login("AB1234", issued=T + 5))  # the user logged in again
    assert state.logouts() == {}
    assert not (tmp_path / LOGOUTS_FILE).exists()


# ---- the policy --------------------------------------------------------------------------------


def seen(
    active: StoredSession | None = None,
    copy: StoredSession | None = None,
    logouts: dict[str, int] | None = None,
    now: float = T + 10,
) -> Seen:
    return Seen(active, copy, logouts or {}, now)


def test_a_lost_session_is_restored_from_the_copy() -> None:
    copy = login()
    assert decide(seen(copy=copy)) == [Restore(copy)]
    assert decide(seen(copy=copy), env_token=True) == [Restore(copy)]  # the copy comes first


def test_redis_in_line_with_the_copy_needs_nothing() -> None:
    copy = login()
    assert decide(seen(active=copy, copy=copy)) == []
    assert decide(seen(active=copy, copy=None), env_token=True) == []


def test_a_snapshot_older_than_the_copy_is_overwritten_a_newer_one_kept() -> None:
    older, copy, newer = login("OLD1"), login(issued=T + 60), login("NEW1", issued=T + 120)
    assert decide(seen(active=older, copy=copy, now=T + 200)) == [Restore(copy)]
    assert decide(seen(active=newer, copy=copy, now=T + 200)) == []


def test_an_invalid_login_in_redis_marks_the_copy_and_is_never_restored() -> None:
    copy = login()
    refused = copy.model_copy(update={"valid": False})
    assert decide(seen(active=refused, copy=copy)) == [MarkCopyInvalid(refused)]
    assert decide(seen(copy=refused)) == []
    assert decide(seen(copy=refused), env_token=True) == [StoreEnvToken()]


def test_an_expired_copy_is_dropped_not_restored() -> None:
    copy = login()
    assert decide(seen(copy=copy, now=copy.expires_at)) == [DropCopy()]
    assert decide(seen(copy=copy, now=copy.expires_at), env_token=True) == [
        DropCopy(),
        StoreEnvToken(),
    ]


def test_pending_logouts_come_first_and_their_user_is_not_restored() -> None:
    copy = login("AB1234")
    logouts = {"ZZ9999": T, "AB1234": T + 1}
    assert decide(seen(copy=copy, logouts=logouts)) == [
        ApplyLogout("AB1234", T + 1),
        ApplyLogout("ZZ9999", T),
    ]
    other = login("CD5678")
    assert decide(seen(copy=other, logouts={"AB1234": T})) == [
        ApplyLogout("AB1234", T),
        Restore(other),
    ]


def test_the_environment_token_only_when_allowed_and_nothing_is_active() -> None:
    assert decide(seen()) == []
    assert decide(seen(), env_token=True) == [StoreEnvToken()]
    assert decide(seen(active=login()), env_token=True) == []


def test_a_pending_logout_settles_once_heard_or_once_its_token_expired() -> None:
    expiry = next_token_expiry(NOW).timestamp()
    assert logout_settled(T, listeners=1, now=T + 1)
    assert not logout_settled(T, listeners=0, now=T + 1)
    assert not logout_settled(T, listeners=0, now=expiry - 1)
    assert logout_settled(T, listeners=0, now=expiry)
