"""People and approvals: setup (the first admin), users, login / logout / whoami, and
protocol release / list.

A run database is set up once by an admin (``labctl setup``), who then makes the accounts
(``labctl users add``). A supervisor releases each protocol version with a signature
(``labctl protocol release``); real runs start only from released versions.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from labctl.accounts import Action, AuthError, Role
from labctl.cli.auth import (
    WALL,
    add_password_option,
    add_sign_options,
    drop_token,
    load_token,
    read_password,
    save_token,
    sign_if_needed,
    who,
)
from labctl.cli.common import (
    EXIT_OK,
    add_db_options,
    check_db_path,
    db_path,
    load_or_fail,
    named_db,
    open_store,
    out,
)
from labctl.errors import ParameterError
from labctl.store import Store


def cmd_setup(args: argparse.Namespace) -> int:
    """Create the database (if need be) and its first admin account."""
    from labctl.accounts import check_password_rules
    from labctl.clock import RealClock

    path = db_path(args)
    check_db_path(path, create=True, named=named_db(args))  # never in a missing folder
    if path.exists():
        with Store.open(path, RealClock()) as store:
            if store.user_count():
                raise AuthError(
                    f"{path} is set up already: an admin adds users with labctl users add"
                )
            if store.is_practice():
                raise ParameterError(f"{path} is a practice database: set up a database of its own")
    # The password first: a refused one leaves no database behind.
    password = read_password(args, f"new password for {args.admin}: ", new=True)
    check_password_rules(password, args.admin)
    with Store.open(path, RealClock(), create=True) as store:
        if store.user_count():
            raise AuthError(f"{path} is set up already: an admin adds users with labctl users add")
        store.add_user(
            args.admin, Role.ADMIN, password, full_name=args.full_name or args.admin,
            actor=args.admin, now=WALL.now(),
        )  # fmt: skip
    out(
        f"{path}: set up, with {args.admin} as its admin; next: labctl login {args.admin} --db {path}"
    )
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        if args.users_cmd == "passwd" and (args.name is None):
            return _own_password(store, path, args)
        actor = who(
            store, path, args, Action.MANAGE_USERS if args.users_cmd != "list" else Action.VIEW
        )
        now = WALL.now()
        if args.users_cmd == "list":
            for u in store.users():
                state = "disabled" if u.disabled else (
                    f"locked until {u.locked_until:%H:%M} UTC"
                    if u.locked_until and u.locked_until > now else "active"
                )  # fmt: skip
                out(f"{u.name:<16} {u.role.value:<11} {state:<24} {u.full_name}")
            return EXIT_OK
        if actor.role is not Role.ADMIN:
            raise AuthError("only an admin manages users")
        if args.users_cmd == "add":
            password = read_password(args, f"new password for {args.name}: ", new=True)
            u = store.add_user(
                args.name, Role(args.role), password, full_name=args.full_name or args.name,
                actor=actor.name, now=now,
            )  # fmt: skip
            out(f"user {u.name} added ({u.role.value})")
        elif args.users_cmd in ("disable", "enable"):
            if args.name == actor.name and args.users_cmd == "disable":
                raise AuthError("an admin cannot disable their own account")
            store.set_disabled(args.name, args.users_cmd == "disable", actor=actor.name, now=now)
            out(f"user {args.name} {args.users_cmd}d")
        elif args.users_cmd == "passwd":
            store.get_user(args.name)
            password = read_password(args, f"new password for {args.name}: ", new=True)
            store.set_password(args.name, password, actor=actor.name, now=now)
            out(f"password of {args.name} set; their sessions have ended")
    return EXIT_OK


def _own_password(store: Store, path: Path, args: argparse.Namespace) -> int:
    """Change the signed-in user's own password (the current one asked first)."""
    actor = who(store, path, args, Action.VIEW)
    current = read_password(args, f"current password of {actor.name}: ")
    store.authenticate(actor.name, current, now=WALL.now(), what="changing the password")
    new = read_password(args, "new password: ", new=True)
    store.set_password(actor.name, new, actor=actor.name, now=WALL.now())
    drop_token(path)
    out(f"password of {actor.name} changed; sign in again with labctl login {actor.name}")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        if store.user_count() == 0:
            raise AuthError(
                f"{path} has no user accounts yet: labctl setup --db {path} --admin NAME"
            )
        password = read_password(args, f"password of {args.name}: ")
        user = store.authenticate(args.name, password, now=WALL.now(), what="signing in")
        token = store.open_session(user, client="cli", now=WALL.now())
    save_token(path, token)
    out(
        f"signed in to {path} as {user.name} ({user.role.value}); the session ends after 30 "
        "minutes unused or 12 hours"
    )
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        token = load_token(path)
        if token:
            store.close_session(token, now=WALL.now())
    drop_token(path)
    out(f"signed out of {path}")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        actor = who(store, path, args, Action.VIEW)
    role = actor.role.value if actor.role else "no accounts: a practice database"
    out(f"{actor.name} ({role}) on {path}")
    return EXIT_OK


# ---- protocol release ------------------------------------------------------------------


def protocol_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def require_released(store: Store, protocol_id: str, version: str, text: str, file: str) -> None:
    """Refuse a real run of a protocol text that is not released as it is (a practice or
    dry-run database runs any)."""
    if store.is_practice():
        return
    digest = protocol_sha256(text)
    if store.release_of(digest) is not None:
        return
    earlier = store.release_for(protocol_id, version)
    if earlier is not None:
        raise AuthError(
            f"{file}: {protocol_id} v{version} has changed since it was released (released "
            f"sha256 {earlier.sha256[:16]}, this file {digest[:16]}): run the released text, "
            "or have the new one released as a new version"
        )
    raise AuthError(
        f"{file}: {protocol_id} v{version} is not released in {store.path}: a supervisor "
        f"releases it with labctl protocol release {file} --reason ..."
    )


def cmd_protocol_release(args: argparse.Namespace) -> int:
    proto = load_or_fail(args.file)
    text = proto.source_text  # what a run of it stores, and hashes the same way
    if not args.reason:
        raise ParameterError("protocol release needs --reason (it goes into the signature)")
    store, path = open_store(args)
    with store:
        actor = who(store, path, args, Action.RELEASE_PROTOCOL)
        digest = protocol_sha256(text)
        if store.release_of(digest) is not None:
            raise ParameterError(f"{args.file} is released already ({proto.id} v{proto.version})")
        earlier = store.release_for(proto.id, proto.version)
        if earlier is not None:
            raise ParameterError(
                f"{proto.id} v{proto.version} was released with other content (sha256 "
                f"{earlier.sha256[:16]}): give the changed protocol a new version"
            )
        subject = {"protocol": proto.id, "version": proto.version, "sha256": digest}
        sig = sign_if_needed(
            store, actor, args, Action.RELEASE_PROTOCOL, subject, reason=args.reason
        )
        if sig is None:
            raise AuthError("releasing a protocol needs accounts (labctl setup)")
        store.release_protocol(proto.id, proto.version, text, signature=sig, now=WALL.now())
    out(f"released {proto.id} v{proto.version} (sha256 {digest}); signed: {sig.line()}")
    return EXIT_OK


def cmd_protocol_list(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        who(store, path, args, Action.VIEW)
        releases = store.releases()
        if not releases:
            out("no released protocols")
        for r in releases:
            sig = store.get_signature(r.signature_id)
            out(f"{r.protocol_id} v{r.version}  sha256 {r.sha256[:16]}  released by {sig.line()}")
    return EXIT_OK


# ---- the parser ------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add setup, users, login, logout, whoami and protocol to the parser."""
    p = sub.add_parser("setup", help="set up a run database for people: its first admin")
    p.add_argument("--admin", required=True, help="user name of the first admin")
    p.add_argument("--full-name", help="the admin's full name (shown with signatures)")
    add_password_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("users", help="user accounts (an admin's)")
    us = p.add_subparsers(dest="users_cmd", metavar="ACTION", required=True)
    q = us.add_parser("list", help="accounts, their roles and states")
    add_db_options(q)
    q = us.add_parser("add", help="a new account")
    q.add_argument("name", help="user name (letters, digits, '.', '-', '_')")
    q.add_argument("--role", required=True, choices=[r.value for r in Role], help="its one role")
    q.add_argument("--full-name", help="full name, shown with signatures")
    add_password_option(q)
    add_db_options(q)
    for verb, h in (("disable", "stop an account (its sessions end)"),
                    ("enable", "enable an account again, or unlock it")):  # fmt: skip
        q = us.add_parser(verb, help=h)
        q.add_argument("name", help=f"the user name of the account to {verb}")
        add_db_options(q)
    q = us.add_parser("passwd", help="change your password, or (admin) set another user's")
    q.add_argument("name", nargs="?", help="the user (an admin's); default: your own")
    add_password_option(q)
    add_db_options(q)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("login", help="sign in to a run database (a session for the CLI)")
    p.add_argument("name", help="your user name")
    add_password_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="end your session")
    add_db_options(p)
    p.set_defaults(func=cmd_logout)
    p = sub.add_parser("whoami", help="who is signed in, with which role")
    add_db_options(p)
    p.set_defaults(func=cmd_whoami)

    p = sub.add_parser("protocol", help="released protocol versions (a supervisor's)")
    ps = p.add_subparsers(dest="protocol_cmd", metavar="ACTION", required=True)
    q = ps.add_parser("release", help="release a protocol version, signed (real runs need it)")
    q.add_argument("file", help="protocol YAML file")
    q.add_argument("--reason", default="", help="why it is released (goes into the signature)")
    add_sign_options(q, Action.RELEASE_PROTOCOL)
    add_db_options(q)
    q.set_defaults(func=cmd_protocol_release)
    q = ps.add_parser("list", help="released versions, with their hashes and signatures")
    add_db_options(q)
    q.set_defaults(func=cmd_protocol_list)
