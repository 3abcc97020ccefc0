"""The Harbor stand-in's model: users, projects and who may pull or push where.

Harbor v2.6's rules as kubeferry meets them: a repository lives under a project (the
first path component); a project must exist before anything is pushed into it (Harbor
never creates one on push); names follow Harbor's pattern; anyone may pull from a public
project, the system admin may pull and push anywhere, a project's owner in their own
project. There is always a public ``library`` project (id 1, owned by ``admin``), as in
a fresh Harbor. State is kept in one JSON file, written atomically, so a restarted
stand-in (the "Harbor was down" tests) keeps its projects.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Harbor's project name rule (FACTS.md) and the swagger's maxLength for project_name.
PROJECT_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
MAX_PROJECT_NAME = 255
ADMIN = "admin"
CREATION_RESTRICTIONS = ("everyone", "adminonly")
_NEVER = "0001-01-01T00:00:00.000Z"  # Harbor's zero time in API answers


def now() -> str:
    """The current time as Harbor's API writes it (RFC 3339, milliseconds, UTC)."""
    stamp = datetime.datetime.now(datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class ProjectExists(Exception):
    """POST /projects for a name that is taken (409)."""


@dataclass(frozen=True)
class User:
    user_id: int
    name: str
    password: str = field(repr=False)
    admin: bool = False


@dataclass
class Project:
    project_id: int
    name: str
    owner_id: int
    owner_name: str
    public: bool
    creation_time: str
    update_time: str

    def to_api(self, viewer: User | None, repo_count: int) -> dict:
        """The swagger ``Project`` as Harbor 2.6 answers it (empty values omitted)."""
        data: dict = {
            "project_id": self.project_id,
            "owner_id": self.owner_id,
            "name": self.name,
            "creation_time": self.creation_time,
            "update_time": self.update_time,
            "owner_name": self.owner_name,
            "repo_count": repo_count,
            "chart_count": 0,
            "metadata": {"public": "true" if self.public else "false"},
            "cve_allowlist": {
                "id": self.project_id,
                "project_id": self.project_id,
                "items": [],
                "creation_time": _NEVER,
                "update_time": _NEVER,
            },
        }
        if viewer is not None and (viewer.admin or viewer.user_id == self.owner_id):
            data["togglable"] = True
            data["current_user_role_id"] = 1  # projectAdmin
            data["current_user_role_ids"] = [1]
        return data


class HarborModel:
    """Users and projects, shared by the API, the token endpoint and the /v2/ guard."""

    def __init__(self, state_file: Path, users: list[User], project_creation: str = "everyone"):
        if project_creation not in CREATION_RESTRICTIONS:
            raise ValueError(f"project_creation must be one of {CREATION_RESTRICTIONS}")
        self.state_file = Path(state_file)
        self.users = {user.name: user for user in users}
        self.project_creation = project_creation
        self._lock = threading.Lock()
        self._projects: dict[str, Project] = {}
        self._next_id = 1
        self._load()

    # -- persistence --------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self._projects = {p["name"]: Project(**p) for p in data["projects"]}
            self._next_id = data["next_id"]
            return
        admin = self.users[ADMIN]
        stamp = now()
        self._projects = {"library": Project(1, "library", admin.user_id, admin.name, True, stamp, stamp)}
        self._next_id = 2
        self._save()

    def _save(self) -> None:
        data = {"next_id": self._next_id, "projects": [asdict(p) for p in self._projects.values()]}
        temp = self.state_file.with_name(self.state_file.name + ".tmp")
        temp.write_text(json.dumps(data, indent=1))
        os.replace(temp, self.state_file)

    # -- users ------------------------------------------------------------------------------

    def login(self, authorization: str | None) -> User | None:
        """The user a Basic Authorization header proves, else None.

        Wrong credentials make the caller anonymous, as Harbor's security middleware does:
        an anonymous caller then gets 401 from whatever needs a login.
        """
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.users.get(username)
        if user is None or not hmac.compare_digest(user.password, password):
            return None
        return user

    # -- projects ------------------------------------------------------------------------

    def project(self, name: str) -> Project | None:
        with self._lock:
            return self._projects.get(name)

    def project_by_id(self, project_id: int) -> Project | None:
        with self._lock:
            return next((p for p in self._projects.values() if p.project_id == project_id), None)

    def projects(self) -> list[Project]:
        with self._lock:
            return sorted(self._projects.values(), key=lambda p: p.project_id)

    def create(self, name: str, public: bool, owner: User) -> Project:
        with self._lock:
            if name in self._projects:
                raise ProjectExists(name)
            stamp = now()
            project = Project(self._next_id, name, owner.user_id, owner.name, public, stamp, stamp)
            self._projects[name] = project
            self._next_id += 1
            self._save()
            return project

    def may_create(self, user: User) -> bool:
        return user.admin or self.project_creation == "everyone"

    def may_read(self, project: Project, user: User | None) -> bool:
        if project.public:
            return True
        return user is not None and (user.admin or user.user_id == project.owner_id)

    # -- registry access (the token endpoint's rules) ------------------------------------

    def grant(self, username: str | None, repository: str, actions: list[str]) -> list[str]:
        """The actions on ``repository`` a token may carry: none outside an existing project."""
        project_name, sep, _ = repository.partition("/")
        project = self.project(project_name) if sep else None
        if project is None:
            return []
        user = self.users.get(username) if username else None
        granted = []
        if "pull" in actions and self.may_read(project, user):
            granted.append("pull")
        if "push" in actions and user is not None and (user.admin or user.user_id == project.owner_id):
            granted.append("push")
        if "delete" in actions and user is not None and user.admin:
            granted.append("delete")
        return granted


def check_project_name(name: object) -> str | None:
    """Why Harbor would refuse ``name`` as a project name, or None if it is fine."""
    if not isinstance(name, str) or not name:
        return "project_name is required"
    if len(name) > MAX_PROJECT_NAME:
        return f"project name is longer than {MAX_PROJECT_NAME} characters"
    if not PROJECT_NAME.match(name):
        return "project name is not in lower case or contains illegal characters"
    return None
