"""Seed Harbor from a bundle: projects first, then every image, blobs straight from the file.

Order of work, each step in parallel: uploads ``workers`` at once, the requests that only
wait on a round trip (HEADs, mounts, manifests) ``transport.ROUND_TRIP_LANE`` times as many:

1. reach Harbor (systeminfo), check the login, create missing projects (public: nodes pull
   without credentials);
2. one token for every repository (learned while the API answered), then a survey with
   HEAD only: which manifests each name already has, which blobs each repository has;
3. blobs: each missing digest is uploaded once (read in place from the bundle, verified),
   then mounted into every other repository that needs it; a digest some repository of the
   project already holds is mounted, never sent;
4. manifests last, only where the tag does not already point at the same digest.

A re-seed of unchanged images therefore sends no blob and no manifest, and a seed that
was interrupted (Harbor went down) resumes: what arrived is found by HEAD.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, NoReturn, TypeVar

from kubeferry import transport
from kubeferry.bundle.images import BundleBlobs, BundleImage
from kubeferry.bundle.reader import Bundle
from kubeferry.console import human_bytes
from kubeferry.errors import InputError, KubeferryError, OperationError
from kubeferry.installer.harbor_api import DEFAULT_TIMEOUT, HarborAPI
from kubeferry.installer.harbor_names import harbor_references
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.oci.auth import Credentials, Login
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.reference import ImageReference

Progress = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Target:
    """One name to push in Harbor and the bundle image it gets."""

    image: BundleImage
    ref: ImageReference

    @property
    def project(self) -> str:
        return self.ref.repository.split("/", 1)[0]


@dataclass
class SeedPlan:
    """What a seed would do, found with HEAD requests only."""

    url: str
    projects_to_create: list[str]
    images: int
    images_to_push: int
    blobs_to_upload: int
    blobs_to_mount: int
    bytes_to_upload: int

    def lines(self) -> list[str]:
        lines = [f"create Harbor project {name} (public)" for name in self.projects_to_create]
        if self.images_to_push:
            lines.append(
                f"push {self.images_to_push} of {self.images} images to {self.url}:"
                f" upload {self.blobs_to_upload} blobs ({human_bytes(self.bytes_to_upload)}),"
                f" mount {self.blobs_to_mount}"
            )
        return lines


@dataclass
class SeedResult:
    """What a seed did. ``images`` counts every name in Harbor, pushed now or before."""

    images: int
    blobs_sent: int
    blobs_skipped: int
    blobs_mounted: int
    bytes_sent: int
    manifests_pushed: int = 0
    projects_created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.projects_created or self.blobs_sent or self.blobs_mounted
                    or self.manifests_pushed)

    def summary(self) -> str:
        created = f"created project {', '.join(self.projects_created)}; " if self.projects_created else ""
        return (f"{created}{self.images} images: {self.manifests_pushed} pushed,"
                f" {self.blobs_sent} blobs sent ({human_bytes(self.bytes_sent)}),"
                f" {self.blobs_mounted} mounted, {self.blobs_skipped} already there")


@dataclass
class _Survey:
    """What Harbor already holds, by HEAD."""

    manifests: dict[ImageReference, str | None]  # target ref -> digest under its tag
    has_blob: dict[tuple[str, str], bool]  # (repository, digest) -> present


def targets_of(bundle: Bundle, settings: RegistrySettings) -> list[Target]:
    """Every (bundle image, Harbor name) pair, refusing two images under one name."""
    targets: dict[ImageReference, Target] = {}
    for image in BundleBlobs(bundle).images():
        for ref in harbor_references(image.name, settings):
            other = targets.get(ref)
            if other is not None and other.image.manifest_digest != image.manifest_digest:
                raise InputError(f"{other.image.name} and {image.name} would both be pushed as {ref};"
                                 " the bundle holds two images that Harbor cannot tell apart")
            targets[ref] = Target(image, ref)
    return list(targets.values())


class Seeder:
    """One seeding run against one Harbor (use ``seed`` / ``plan_seed``)."""

    def __init__(self, bundle: Bundle, settings: RegistrySettings, password: str,
                 workers: int = 4, timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
                 retries: int = 5) -> None:
        self.bundle = bundle
        self.settings = settings
        self.workers = max(1, workers)  # uploads at once
        self.round_trips = self.workers * transport.ROUND_TRIP_LANE  # HEADs, mounts, manifests
        self.blobs = BundleBlobs(bundle)
        self.api = HarborAPI(settings.url, settings.username, password, settings.ca_file, timeout,
                             retries=retries)
        credentials = Credentials({settings.host: Login(settings.username, password)})
        # an http:// Harbor was allowed by name already (harbor seed's flag, the inventory key)
        self.client = RegistryClient({settings.host: settings.url}, credentials,
                                     settings.ca_file, timeout=timeout, max_retries=retries,
                                     allow_plain_http_credentials=True, jobs=self.workers)

    def close(self) -> None:
        self.api.close()
        self.client.close()

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps -----------------------------------------------------------------------------------

    def projects(self, targets: list[Target]) -> tuple[list[str], list[str]]:
        """(existing, missing) projects the targets live in; checks reach and login on the way.

        Meanwhile the registry is asked, anonymously, how it authenticates (one round trip
        less later)."""
        with ThreadPoolExecutor(max_workers=1) as side:
            challenge = side.submit(self.client.challenge, self.settings.host) if targets else None
            self.api.systeminfo(anonymous=True)  # reachable, trusted, Harbor's API: no password needed
            names = sorted({target.project for target in targets})
            existing = [name for name in names if self.api.project_exists(name)]
            with contextlib.suppress(KubeferryError):  # a registry fault shows again where it matters
                if challenge is not None:
                    challenge.result()
        return existing, [name for name in names if name not in existing]

    def authorize(self, targets: list[Target]) -> None:
        """Tokens for every repository at once, not one token request per repository."""
        if targets:
            self.client.authorize(self.settings.host, [target.ref.repository for target in targets])

    def survey(self, targets: list[Target], existing: Iterable[str]) -> _Survey:
        """HEAD every manifest of targets in existing projects, and the blobs of those whose
        manifest is not there yet."""
        present = set(existing)
        known = [t for t in targets if t.project in present]
        manifests: dict[ImageReference, str | None] = {t.ref: None for t in targets}
        for ref, digest in _parallel(lambda t: (t.ref, self.client.manifest_digest(t.ref)),
                                     known, self.round_trips):
            manifests[ref] = digest
        has_blob = {(t.ref.repository, blob.digest): False for t in targets for blob in t.image.blobs}
        # A registry takes a manifest only once every blob it names is in that repository:
        # where the manifest is there, its blobs are, without a HEAD each (a re-seed that
        # finds everything costs one round of manifest HEADs).
        complete = [t for t in known if manifests[t.ref] == t.image.manifest_digest]
        for target in complete:
            has_blob.update({(target.ref.repository, blob.digest): True for blob in target.image.blobs})
        asks = {(t.ref.repository, blob.digest): t.ref for t in known if t not in complete
                for blob in t.image.blobs if not has_blob[(t.ref.repository, blob.digest)]}

        def head(item: tuple[tuple[str, str], ImageReference]) -> tuple[tuple[str, str], bool]:
            (_, digest), ref = item
            return item[0], self.client.blob_exists(ref, digest)

        for key, found in _parallel(head, list(asks.items()), self.round_trips):
            has_blob[key] = found
        return _Survey(manifests, has_blob)

    def plan(self) -> SeedPlan:
        targets = targets_of(self.bundle, self.settings)
        existing, missing = self.projects(targets)
        self.authorize(targets)
        survey = self.survey(targets, existing)
        to_push = [t for t in targets if survey.manifests[t.ref] != t.image.manifest_digest]
        uploads, mounts = _blob_work(targets, survey)
        return SeedPlan(
            url=self.settings.url, projects_to_create=missing, images=len(targets),
            images_to_push=len(to_push), blobs_to_upload=len(uploads),
            blobs_to_mount=sum(len(repos) for _, repos, _ in mounts) + sum(len(r) - 1 for _, r in uploads),
            bytes_to_upload=sum(blob.size for blob, _ in uploads),
        )

    def seed(self, progress: Progress | None = None) -> SeedResult:
        targets = targets_of(self.bundle, self.settings)
        existing, missing = self.projects(targets)
        result = SeedResult(images=len(targets), blobs_sent=0, blobs_skipped=0,
                            blobs_mounted=0, bytes_sent=0)
        with ThreadPoolExecutor(max_workers=1) as side:
            # where every project exists already, the tokens come while the API answers
            tokens = None if missing else side.submit(self.authorize, targets)
            for name in missing:
                if self.api.create_project(name, public=True):
                    result.projects_created.append(name)
            for name in existing:
                project = self.api.get_project(name, exists=True) or {}
                if (project.get("metadata") or {}).get("public") != "true":
                    result.warnings.append(
                        f"Harbor project {name} is private: the nodes pull without credentials;"
                        " make it public in Harbor"
                    )
            try:
                if tokens is None:
                    self.authorize(targets)
                else:
                    tokens.result()
                self._push(targets, existing, result, progress)
            except KubeferryError as error:
                self._explain(error)
        return result

    def _explain(self, error: KubeferryError) -> NoReturn:
        """Raise the one line a failed push deserves: Harbor gone, a role, or the error."""
        try:
            self.api.systeminfo()  # did Harbor go away? then say that, plainly
        except OperationError as down:
            raise OperationError(f"{down} (it went away while seeding); start it and run"
                                 " again: what arrived is not sent again") from None
        if "(HTTP 401" in str(error):  # the login worked for the API: it is the role
            raise OperationError(
                f"Harbor at {self.settings.url} refused a push by user"
                f" {self.settings.username!r} into project {self.settings.project}: give the"
                " user a role that may push there (developer or more), or use an admin") from None
        raise OperationError(f"seeding Harbor at {self.settings.url} failed: {error};"
                             " run again to resume (what arrived is not sent again)") from None

    def _push(self, targets: list[Target], existing: list[str], result: SeedResult,
              progress: Progress | None) -> None:
        survey = self.survey(targets, existing)
        result.blobs_skipped = sum(1 for found in survey.has_blob.values() if found)
        uploads, mounts = _blob_work(targets, survey)

        def upload(item: tuple[Descriptor, list[str]]) -> tuple[int, int]:
            blob, repositories = item
            sent = self.client.push_blob(self._repo_ref(repositories[0]), blob, self.blobs,
                                         check=False)  # the survey found it missing
            if progress is not None and sent:
                progress(sent)
            mounted, sent_again = self._mount(blob, repositories[1:], repositories[0])
            return sent + sent_again, mounted

        def count(sent: int, mounted: int) -> None:
            result.bytes_sent += sent
            result.blobs_sent += 1 if sent else 0
            result.blobs_mounted += mounted

        for sent, mounted in _parallel(upload, uploads, self.workers):
            count(sent, mounted)
        for mounted, sent in _parallel(lambda item: self._mount(*item), mounts, self.round_trips):
            count(sent, mounted)
        to_push = [t for t in targets if survey.manifests[t.ref] != t.image.manifest_digest]
        for _ in _parallel(lambda t: self.client.push_manifest(t.ref, t.image.manifest,
                                                               t.image.media_type),
                           to_push, self.round_trips):
            result.manifests_pushed += 1

    def _repo_ref(self, repository: str) -> ImageReference:
        return ImageReference(self.settings.host, repository, "latest")

    def _mount(self, blob: Descriptor, repositories: list[str], source: str) -> tuple[int, int]:
        """Mount ``blob`` from ``source`` into each repository, uploading where Harbor won't.

        Returns (mounts, bytes uploaded instead).
        """
        mounted = sent = 0
        for repository in repositories:
            ref = self._repo_ref(repository)
            if self.client.mount_blob(ref, blob.digest, source):
                mounted += 1
            else:
                sent += self.client.push_blob(ref, blob, self.blobs, check=False)
        return mounted, sent


def _blob_work(targets: list[Target], survey: _Survey
               ) -> tuple[list[tuple[Descriptor, list[str]]], list[tuple[Descriptor, list[str], str]]]:
    """(uploads: blob, repositories needing it; mounts: blob, repositories, source repository).

    A blob no repository of the targets holds is uploaded once and mounted into the rest;
    a blob some repository holds is only mounted.
    """
    needed: dict[str, list[str]] = {}
    holders: dict[str, str] = {}
    descriptors: dict[str, Descriptor] = {}
    for target in targets:
        for blob in target.image.blobs:
            key = (target.ref.repository, blob.digest)
            descriptors[blob.digest] = blob
            if survey.has_blob.get(key):
                holders.setdefault(blob.digest, target.ref.repository)
            elif target.ref.repository not in needed.setdefault(blob.digest, []):
                needed[blob.digest].append(target.ref.repository)
    uploads = [(descriptors[d], repos) for d, repos in needed.items() if repos and d not in holders]
    mounts = [(descriptors[d], repos, holders[d]) for d, repos in needed.items() if repos and d in holders]
    return uploads, mounts


def _parallel(work: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """``work`` over ``items`` on at most ``workers`` threads; the first failure is raised."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]


def seed(bundle: Bundle, settings: RegistrySettings, password: str, workers: int = 4,
         progress: Progress | None = None, timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
         retries: int = 5) -> SeedResult:
    """Create missing projects and push every bundle image into Harbor (see the module doc)."""
    with Seeder(bundle, settings, password, workers, timeout, retries) as seeder:
        return seeder.seed(progress)


def plan_seed(bundle: Bundle, settings: RegistrySettings, password: str, workers: int = 4,
              timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT) -> SeedPlan:
    """What ``seed`` would do, from HEAD requests only (nothing is created or pushed)."""
    with Seeder(bundle, settings, password, workers, timeout) as seeder:
        return seeder.plan()
