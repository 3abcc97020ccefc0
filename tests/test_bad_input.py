"""Bad inputs and faults across the commands, as a new user and an attacker try them (issue 15).

Each case is a command line with its files, environment and stdin; it must end with the
expected exit code and exactly one line on stderr that names the key or path at fault,
no traceback, no "internal error", and no secret's value anywhere in the output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import requests
from bad_input_helpers import SECRET, inventory_yaml, legacy, rewrite, small_bundle

KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


@dataclass(frozen=True)
class Inventory:
    """A valid one-node inventory with ``overrides`` (dotted keys), written as cluster.yaml."""

    overrides: dict[str, object]


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` may hold {t} (a fresh directory) and {bundle} (a good bundle)."""

    id: str
    argv: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    files: dict[str, str | bytes | Inventory] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    setup: Callable[[Path, Path], None] | None = None  # (t, bundle)


def _edit(key: str, value: object) -> Callable[[Path, Path], None]:
    def setup(t: Path, bundle: Path) -> None:
        rewrite(bundle, t / "edited.tar", edit=lambda meta: meta.__setitem__(key, value))
    return setup


def _flip_header_byte(t: Path, bundle: Path) -> None:
    raw = bytearray(bundle.read_bytes())
    at = raw.index(b"images/oci-layout")
    while at % 512:  # the header's name field starts a block (the metadata names it too)
        at = raw.index(b"images/oci-layout", at + 1)
    raw[at + 2] ^= 0x20
    (t / "edited.tar").write_bytes(bytes(raw))


def _fifo(t: Path, bundle: Path) -> None:
    os.mkfifo(t / "fifo")


def _symlink(t: Path, bundle: Path) -> None:
    (t / "real.tar").write_bytes(b"keep me")
    (t / "link.tar").symlink_to(t / "real.tar")


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a read-only or full disk) needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True, timeout=30)


def _readonly_dir(t: Path, bundle: Path) -> None:
    _mount_tmpfs(t / "ro", "ro,size=1m")


def _full_dir(t: Path) -> None:
    """A tiny tmpfs filled to the last byte: a full disk."""
    _mount_tmpfs(t / "full", "size=64k")
    subprocess.run(["dd", "if=/dev/zero", f"of={t / 'full' / 'fill'}", "bs=4k"], capture_output=True,
                   timeout=30)


def _key(t: Path) -> Path:
    return t / "id_ed25519"


def _inv(**overrides: object) -> dict[str, Inventory]:
    return {"cluster.yaml": Inventory(overrides)}


BUILD = ("bundle", "build", "--k8s", "1.25.0", "--cache-dir", "{t}/cache", "--output", "{t}/out")
SOURCES = ("bundle", "sources", "--k8s", "1.25.0")
INSTALL = ("install", "--bundle", "{bundle}", "--inventory", "{t}/cluster.yaml", "--plan",
           "--run-dir", "{t}/runs")
ODD_IMAGES = [{"name": "a", "digest": "b"}]  # typed, but no such image and no size
SRC = (*SOURCES, "--sources", "{t}/s.yaml")
SEED = ("harbor", "seed", "--bundle", "{bundle}", "--password-stdin")

CASES = [
    # -- 2: the digest covers the metadata -------------------------------------------------
    *[Case(f"metadata-{key}", ("bundle", "verify", "{t}/edited.tar"), 1, ("metadataDigest", "changed"),
           setup=_edit(key, value))
      for key, value in (("kubernetes", "1.26.0"), ("os", "el9"), ("arch", "arm64"),
                         ("created", "2020-01-01T00:00:00Z"), ("include", ["images"]),
                         ("sources", {}), ("imageSet", {"pause": "3.9"}), ("bogus", 1))],
    Case("metadata-edit-inspect", ("bundle", "inspect", "{t}/edited.tar"), 1, ("metadataDigest",),
         setup=_edit("kubernetes", "1.26.0")),
    Case("verify-digest-mismatch", ("bundle", "verify", "{bundle}", "--digest", "sha256:" + "0" * 64),
         1, ("bundle digest", "0000")),
    Case("verify-digest-malformed", ("bundle", "verify", "{bundle}", "--digest", "md5:abc"), 2,
         ("--digest", "md5:abc")),
    # -- 4: secrets are never echoed -------------------------------------------------------
    Case("passwordFrom-holds-password", INSTALL, 2, ("ssh.passwordFrom", "not shown"),
         files=_inv(**{"ssh.passwordFrom": SECRET})),
    Case("host-passwordFrom-holds-password", INSTALL, 2, ("hosts[0].ssh.passwordFrom",),
         files=_inv(**{"hosts.0.ssh": {"passwordFrom": SECRET}})),
    Case("password-wrong-type", INSTALL, 2, ("ssh.password", "not shown"),
         files=_inv(**{"ssh.password": [SECRET], "ssh.allowPlaintextPassword": True})),
    Case("registry-password-clear", INSTALL, 2, ("registry.password", "passwordFrom"),
         files=_inv(registry={"url": "https://harbor.example.local", "password": SECRET})),
    # -- 3: no password over plain HTTP ----------------------------------------------------
    Case("seed-plain-http", (*SEED, "--harbor", "http://127.0.0.1:9"), 2,
         ("--harbor", "--send-password-over-plain-http"), stdin=SECRET + "\n"),
    Case("inventory-plain-http-password", INSTALL, 2, ("registry.url", "allowPasswordOverPlainHttp"),
         files=_inv(registry={"url": "http://harbor.example.local", "passwordFrom": "env:HP"}),
         env={"HP": SECRET}),
    # -- 1: outputs never replace special files --------------------------------------------
    Case("images-to-symlink", ("bundle", "images", "{bundle}", "-o", "{t}/link.tar"), 2,
         ("--output", "link.tar", "symbolic link"), setup=_symlink),
    Case("images-to-directory", ("bundle", "images", "{bundle}", "-o", "{t}"), 2,
         ("--output", "directory")),
    Case("images-to-dev-full", ("bundle", "images", "{bundle}", "-o", "/dev/full"), 1,
         ("/dev/full", "No space left")),
    Case("images-missing-parent", ("bundle", "images", "{bundle}", "-o", "{t}/no/such/x.tar"), 2,
         ("--output", "no/such")),
    # -- 5: one release parser -------------------------------------------------------------
    Case("k8s-leading-zero", (*SOURCES[:2], "--k8s", "1.25.00"), 2, ("1.25.00", "malformed")),
    Case("k8s-two-parts", (*SOURCES[:2], "--k8s", "1.25"), 2, ("1.25", "malformed")),
    Case("k8s-unsupported", (*SOURCES[:2], "--k8s", "1.19.0"), 2, ("1.19.0", "not supported")),
    *[Case(f"resigned-{key}-{command}", ("bundle", command, "{t}/edited.tar", *extra), 1, words,
           setup=lambda t, b, key=key, value=value: rewrite(b, t / "edited.tar", edit=_resign(key, value)))
      for key, value, words in (("packages", "x", ("'packages'",)), ("include", 5, ("'include'",)),
                                ("images", ODD_IMAGES, ("index.json",)))
      for command, extra in (("inspect", ()), ("images", ("-o", "/dev/null")))
      if not (key == "images" and command == "inspect")],
    Case("resigned-image-size-inspect", ("bundle", "inspect", "{t}/edited.tar"), 1, ("shape", "digest"),
         setup=lambda t, b: rewrite(b, t / "edited.tar", edit=_resign("images", ODD_IMAGES))),
    Case("metadata-bad-release", ("bundle", "inspect", "{t}/edited.tar"), 1, ("kubernetes", "malformed"),
         setup=lambda t, b: rewrite(b, t / "edited.tar", edit=_resign("kubernetes", "1.25.00"))),
    # -- 10: inventory values that cannot work ---------------------------------------------
    Case("registry-bare-host", INSTALL, 2, ("registry.url", "image name"),
         files=_inv(registry={"url": "https://harbor"})),
    Case("registry-bad-port", INSTALL, 2, ("registry.url", "99999"),
         files=_inv(registry={"url": "https://harbor.local:99999"})),
    Case("ssh-timeout-negative", INSTALL, 2, ("ssh.timeout", "-5"), files=_inv(**{"ssh.timeout": -5})),
    Case("ssh-timeout-text", INSTALL, 2, ("ssh.timeout", "soon"), files=_inv(**{"ssh.timeout": "soon"})),
    Case("dns-domain", INSTALL, 2, ("cluster.dnsDomain", "bad domain!"),
         files=_inv(**{"cluster.dnsDomain": "bad domain!"})),
    Case("vip-far-away", INSTALL, 2, ("cluster.vip", "10.1.2.3"),
         files=_inv(**{"cluster.vip": "10.1.2.3", "cluster.controlPlaneEndpoint": "10.1.2.3:8443"})),
    Case("vip-loopback", INSTALL, 2, ("cluster.vip", "127.0.0.5"),
         files=_inv(**{"cluster.vip": "127.0.0.5", "cluster.controlPlaneEndpoint": "127.0.0.5:8443"})),
    Case("seed-bare-host", (*SEED, "--harbor", "https://harbor"), 2, ("--harbor", "image name"),
         stdin=SECRET + "\n"),
    # -- 9: secrets that cannot be read, found up front ------------------------------------
    Case("secret-env-missing", INSTALL, 2, ("ssh.passwordFrom", "KF_MISSING_VAR"),
         files=_inv(**{"ssh.passwordFrom": "env:KF_MISSING_VAR"})),
    Case("secret-file-missing", INSTALL, 2, ("ssh.passwordFrom", "/nonexistent/pw"),
         files=_inv(**{"ssh.passwordFrom": "file:/nonexistent/pw"})),
    Case("key-file-missing", INSTALL, 2, ("ssh.keyFile", "/nonexistent/id"),
         files=_inv(**{"ssh.keyFile": "/nonexistent/id"})),
    Case("registry-secret-missing", INSTALL, 2, ("registry.passwordFrom", "KF_NO_HARBOR"),
         files=_inv(registry={"url": "https://harbor.example.local", "passwordFrom": "env:KF_NO_HARBOR"})),
    # -- 8: input errors are not internal errors -----------------------------------------
    Case("mirror-port", (*BUILD, "--mirror", "registry.k8s.io=http://127.0.0.1:99999"), 2,
         ("--mirror registry.k8s.io", "port")),
    Case("mirror-broken-ipv6", (*BUILD, "--mirror", "registry.k8s.io=http://[::1"), 2,
         ("--mirror registry.k8s.io", "not a URL")),
    Case("sources-port", SRC, 2, ("--sources registries.docker.io", "port"),
         files={"s.yaml": "registries: {docker.io: 'https://mirror.local:70000'}\n"}),
    Case("sources-binary", SRC, 2, ("--sources", "s.yaml", "not a text"),
         files={"s.yaml": bytes(range(256))}),
    Case("inventory-binary", INSTALL, 2, ("--inventory", "cluster.yaml", "not a text"),
         files={"cluster.yaml": b"\xff\xfe\x00garbage"}),
    Case("output-is-a-file", (*BUILD[:-1], "{t}/afile"), 2, ("--output", "afile", "is a file"),
         files={"afile": "x"}),
    Case("output-read-only", (*BUILD[:-1], "{t}/ro/out"), 2, ("--output", "Read-only"), setup=_readonly_dir),
    Case("cache-read-only", (*BUILD[:4], "--cache-dir", "{t}/ro/cache", "--output", "{t}/out"), 2,
         ("--cache-dir", "Read-only"), setup=_readonly_dir),
    Case("cache-is-a-file", (*BUILD[:4], "--cache-dir", "{t}/afile", "--output", "{t}/out"), 2,
         ("--cache-dir", "afile"), files={"afile": "x"}),
    Case("bundle-name-is-a-directory", BUILD, 2, ("bundle file", "directory"),
         setup=lambda t, b: (t / "out" / "kubeferry-k8s-1.25.0-el7-amd64.tar").mkdir(parents=True)),
    Case("run-dir-read-only", (*INSTALL[:-2], "--run-dir", "{t}/ro/runs"), 2, ("--run-dir", "Read-only"),
         files=_inv(), setup=_readonly_dir),
    Case("run-dir-is-a-file", (*INSTALL[:-2], "--run-dir", "{t}/afile"), 2, ("--run-dir", "afile"),
         files={**_inv(), "afile": "x"}),
    Case("images-full-disk", ("bundle", "images", "{bundle}", "-o", "{t}/full/x.tar"), 1,
         ("--output", "No space left"), setup=lambda t, b: _full_dir(t)),
    Case("split-full-disk", ("bundle", "split", "{bundle}", "--size", "1000", "--output", "{t}/full"), 1,
         ("--output", "No space left"), setup=lambda t, b: _full_dir(t)),
    Case("split-read-only", ("bundle", "split", "{bundle}", "--output", "{t}/ro/parts"), 2,
         ("--output", "Read-only"), setup=_readonly_dir),
    Case("patch-read-only", ("bundle", "patch", "{bundle}", "{bundle}", "--output", "{t}/ro/new"), 2,
         ("--output", "Read-only"), setup=_readonly_dir),
    # -- 9: one line, always ---------------------------------------------------------------
    Case("sources-yaml-syntax", SRC, 2, ("--sources", "YAML at line"),
         files={"s.yaml": "registries:\n  docker.io: [unclosed\n"}),
    Case("inventory-yaml-syntax", INSTALL, 2, ("--inventory", "not valid YAML at line"),
         files={"cluster.yaml": "cluster:\n  a: [unclosed\n"}),
    # -- 6: typos never fall back to the internet ----------------------------------------
    Case("sources-typo-file", SRC, 2, ("files.calico.yml", "calico.yaml"),
         files={"s.yaml": "files: {calico.yml: 'http://127.0.0.1:1/c.yaml'}\n"}),
    Case("sources-unused-registry", SRC, 2, ("registries.quay.io", "docker.io"),
         files={"s.yaml": "registries: {quay.io: 'http://127.0.0.1:1'}\n"}),
    Case("sources-climbing-key", SRC, 2, ("files.../x",),
         files={"s.yaml": "files: {'../x': 'http://127.0.0.1:1/x'}\n"}),
    Case("sources-other-os-repo", (*SOURCES, "--os", "debian12", "--sources", "{t}/s.yaml"), 2,
         ("repositories.el7-os", "debian"), files={"s.yaml": "repositories: {el7-os: 'http://127.0.0.1:1'}\n"}),
    Case("mirror-unused-host", (*BUILD, "--mirror", "quay.io=http://127.0.0.1:1"), 2,
         ("--mirror quay.io", "registry.k8s.io")),
    # -- 14: options that would be ignored -------------------------------------------------
    Case("kernel-version-debian", (*BUILD, "--os", "debian12", "--kernel-version", "6.1.0"), 2,
         ("--kernel-version", "el7 only")),
    Case("kernel-version-no-kernel", (*BUILD, "--include", "images,packages", "--kernel-version", "6.1.0"), 2,
         ("--kernel-version", "no kernel")),
    Case("packages-extra-no-packages", (*BUILD, "--include", "images", "--packages-extra", "vim"), 2,
         ("--packages-extra", "vim", "no packages")),
    Case("docker-host", (*BUILD, "--include", "images", "--image-source", "docker"), 1,
         ("tcp://127.0.0.1:1", "DOCKER_HOST"), env={"DOCKER_HOST": "tcp://127.0.0.1:1"}),
    # -- 13: messages that say what is wrong -----------------------------------------------
    Case("format-version-string", ("bundle", "verify", "{t}/edited.tar"), 2,
         ("formatVersion", "not a number"),
         setup=lambda t, b: rewrite(b, t / "edited.tar", edit=_resign("formatVersion", "1"))),
    Case("header-byte-flipped", ("bundle", "verify", "{t}/edited.tar"), 1, ("damaged", "header"),
         setup=_flip_header_byte),
    Case("header-byte-flipped-install", ("install", "--bundle", "{t}/edited.tar", *INSTALL[3:]), 1,
         ("damaged", "header", "images/oci-layout"), files=_inv(), setup=_flip_header_byte),
    # -- 7: streams --------------------------------------------------------------------------
    Case("inspect-stdin-dash", ("bundle", "inspect", "-"), 2, ("regular file", "bundle verify")),
    Case("images-from-fifo", ("bundle", "images", "{t}/fifo", "-o", "{t}/x.tar"), 2, ("fifo", "regular file"),
         setup=_fifo),
    Case("seed-from-stdin", ("harbor", "seed", "--bundle", "/dev/stdin", "--harbor", "https://h.local"), 2,
         ("/dev/stdin", "regular file")),
    Case("verify-empty-stdin", ("bundle", "verify", "-"), 2, ("-", "not a tar")),
    Case("verify-directory", ("bundle", "verify", "{t}"), 2, ("directory",)),
    Case("split-from-stdin", ("bundle", "split", "-"), 2, ("regular file", "bundle verify")),
    Case("split-size-unit", ("bundle", "split", "{bundle}", "--size", "3.9X"), 2, ("--size", "not a size")),
    Case("patch-not-a-delta", ("bundle", "patch", "{bundle}", "{bundle}", "--output", "{t}/new"), 2,
         ("not a kubeferry delta",)),
    Case("delta-from-missing", (*BUILD, "--delta-from", "{t}/no-such.tar"), 2,
         ("--delta-from", "no-such.tar")),
]


def _resign(key: str, value: object) -> Callable[[dict], None]:
    """An edit that also fixes the self-check: what a careful attacker or another writer does."""
    from kubeferry.bundle.format import SELF_CHECK, metadata_self_check

    def edit(meta: dict) -> None:
        meta[key] = value
        meta[SELF_CHECK] = metadata_self_check(meta)
    return edit


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory.mktemp("bundle"))


def run(argv: list[str], stdin: str = "", env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "KUBEFERRY_HARBOR_PASSWORD": SECRET, **(env or {})}
    full_env.pop("KUBEFERRY_DEBUG", None)
    return subprocess.run([*KUBEFERRY, *argv], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def assert_one_line(result: subprocess.CompletedProcess, code: int, words: tuple[str, ...]) -> None:
    output = result.stdout + result.stderr
    assert SECRET not in output, output
    assert "Traceback" not in output and "internal error" not in output, output
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "id_ed25519").write_text("not really a key\n")
    for name, content in case.files.items():
        if isinstance(content, Inventory):
            content = inventory_yaml(_key(tmp_path), **content.overrides)
        target = tmp_path / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        if case.setup is not None:
            case.setup(tmp_path, bundle)
        argv = [arg.format(t=tmp_path, bundle=bundle) for arg in case.argv]
        assert_one_line(run(argv, case.stdin, case.env, cwd=tmp_path), case.code, case.words)
    finally:
        for mount in ("ro", "full"):  # everything a case mounts it unmounts
            if os.path.ismount(tmp_path / mount):
                subprocess.run(["umount", str(tmp_path / mount)], check=True, timeout=30)


def test_good_bundle_verifies_and_prints_its_digest(bundle: Path) -> None:
    from kubeferry.bundle.reader import Bundle

    digest = Bundle.open(bundle).bundle_digest
    result = run(["bundle", "verify", str(bundle), "--digest", digest])
    assert result.returncode == 0, result.stderr
    assert digest in result.stdout and "as expected" in result.stdout
    assert digest in run(["bundle", "inspect", str(bundle)]).stdout


def test_bundle_from_before_the_self_check_still_verifies(bundle: Path, tmp_path: Path) -> None:
    old = legacy(bundle, tmp_path / "old.tar")
    result = run(["bundle", "verify", str(old)])
    assert result.returncode == 0, result.stderr
    assert "before bundles carried a metadata self-check" in result.stdout


def test_images_stream_into_devices_and_fifos(bundle: Path, tmp_path: Path) -> None:
    for device in ("/dev/null",):
        before = os.stat(device)
        result = run(["bundle", "images", str(bundle), "-o", device])
        assert result.returncode == 0, result.stderr
        after = os.stat(device)
        assert (after.st_mode, after.st_rdev, after.st_ino) == (before.st_mode, before.st_rdev, before.st_ino)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        result = run(["bundle", "images", str(bundle), "-o", str(fifo)])
        out, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
        reader.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert out[257:262] == b"ustar" and fifo.is_fifo()
    piped = subprocess.run([*KUBEFERRY, "bundle", "images", str(bundle), "-o", "-"],
                           capture_output=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout[257:262] == b"ustar"
    assert not list(tmp_path.glob(".*partial*"))


def test_symlink_output_is_left_alone(bundle: Path, tmp_path: Path) -> None:
    _symlink(tmp_path, bundle)
    run(["bundle", "images", str(bundle), "-o", str(tmp_path / "link.tar")])
    assert (tmp_path / "link.tar").is_symlink() and (tmp_path / "real.tar").read_bytes() == b"keep me"


KILLED_WRITER = """
import os, sys
from kubeferry.outputs import output_file
with output_file(sys.argv[1]) as handle:
    handle.write(b"half a bundle" * 1000)
    handle.flush()
    os.kill(os.getpid(), 9)
"""


def killed_writer(target: Path) -> Path:
    """Write ``target`` the way every command does, and die by SIGKILL half way: its partial stays."""
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=60)
    assert result.returncode == -9
    (partial,) = target.parent.glob(f".{target.name}.partial-*")
    return partial


def test_kill_9_then_rewrite_leaves_no_stale_partial(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "images.tar"
    stale = killed_writer(target)
    live_writer = subprocess.Popen(["sleep", "60"])
    try:
        live = tmp_path / f".images.tar.partial-{live_writer.pid}"
        live.write_bytes(b"a live write")
        result = run(["bundle", "images", str(bundle), "-o", str(target)])
        assert result.returncode == 0, result.stderr
        assert not stale.exists() and live.exists()  # a running writer keeps its partial
    finally:
        live_writer.kill()
        live_writer.wait(timeout=10)
    assert target.read_bytes()[257:262] == b"ustar"


@pytest.mark.parametrize("argv", [["inventory", "example"], ["bundle", "sources", "--k8s", "1.25.0"]])
def test_stdout_on_a_full_device_is_one_line(argv: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*KUBEFERRY, *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left" in lines[0] and "Traceback" not in result.stderr


def test_a_symlink_planted_as_a_run_log_is_refused(tmp_path: Path) -> None:
    from kubeferry.errors import InputError
    from kubeferry.installer.context import HostLog

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "master1.log").symlink_to(victim)
    with pytest.raises(InputError, match="run log .*symbolic link"):
        HostLog(tmp_path / "master1.log")
    log = HostLog(tmp_path / "node1.log")
    log("a line")
    assert (tmp_path / "node1.log").read_text().endswith("a line\n") and victim.read_text() == "keep\n"


def test_a_v_prefixed_release_is_spelled_one_way() -> None:
    result = run(["bundle", "sources", "--k8s", "v1.25.0"])
    assert result.returncode == 0, result.stderr
    assert "Kubernetes 1.25.0," in result.stdout and "/v1.25/" in result.stdout
    assert "vv1" not in result.stdout and "v1.25.0," not in result.stdout


def _challenge(value: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 401
    response.headers["WWW-Authenticate"] = value
    return response


@pytest.mark.parametrize("origin, challenge", [
    ("http://192.0.2.10:5000", 'Basic realm="registry"'),
    ("https://192.0.2.10:5000", 'Bearer realm="http://192.0.2.11/token",service="registry"'),
])
def test_registry_passwords_never_go_over_plain_http(origin: str, challenge: str) -> None:
    """A Basic challenge over http://, or a token realm on http://, off loopback: refused
    before anything is sent (``send`` would fail the test), unless asked for by name."""
    from kubeferry.errors import InputError
    from kubeferry.oci.auth import Authorizer, Credentials, in_clear

    credentials = Credentials()
    credentials.add("192.0.2.10:5000", "bob", SECRET)

    def send(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was sent")

    with pytest.raises(InputError, match="plain HTTP") as caught:
        Authorizer(credentials, send).answer(origin, "192.0.2.10:5000", True, ["repository:x:pull"],
                                             _challenge(challenge))
    assert SECRET not in str(caught.value)
    assert in_clear("http://harbor.local") and not in_clear("http://127.0.0.1:5000")
    assert not in_clear("http://localhost:5000") and not in_clear("https://harbor.local")
    if challenge.startswith("Basic"):
        allowed = Authorizer(credentials, send, allow_plain_http=True)
        assert allowed.answer(origin, "192.0.2.10:5000", True, [], _challenge(challenge)).startswith("Basic ")


def test_verify_reads_a_stream_once(bundle: Path, tmp_path: Path) -> None:
    from kubeferry.bundle.reader import Bundle

    digest = Bundle.open(bundle).bundle_digest
    data = bundle.read_bytes()
    for name in ("-", "/dev/stdin"):
        result = subprocess.run([*KUBEFERRY, "bundle", "verify", name, "--digest", digest], input=data,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert digest.encode() in result.stdout
    at = data.index(b"# calico stand-in")
    damaged = data[:at] + b"X" + data[at + 1:]
    result = subprocess.run([*KUBEFERRY, "bundle", "verify", "-"], input=damaged, capture_output=True,
                            timeout=60)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "files/calico.yaml" in lines[0]
    cut = subprocess.run([*KUBEFERRY, "bundle", "verify", "-"], input=data[:2048], capture_output=True,
                         timeout=60)
    assert cut.returncode == 1 and len(cut.stderr.decode().strip().splitlines()) == 1


def test_no_credentials_on_harbor_calls_that_need_none(bundle: Path) -> None:
    """A loopback 'Harbor' that records headers: /systeminfo (anonymous) must carry no
    Authorization (the seeder's projects and pushes log in; tests/harbor cover those)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kubeferry.lab.serving import ServerThread

    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            body = b'{"harbor_version": "v2.6.0"}' if self.path.endswith("/systeminfo") else b"{}"
            self.send_response(200 if self.path.endswith("/systeminfo") else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ServerThread(ThreadingHTTPServer(("127.0.0.1", 0), Handler), "harbor-headers")
    try:
        port = server.server.server_address[1]
        result = run(["harbor", "seed", "--bundle", str(bundle), "--harbor", f"http://127.0.0.1:{port}",
                      "--send-password-over-plain-http", "--password-stdin"], stdin=SECRET + "\n")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr  # the bundle holds no image: nothing to push
    assert seen == [("/api/v2.0/systeminfo", None)]  # reached, and no password sent to do it
    assert SECRET not in result.stdout + result.stderr
