"""``bundle build`` end to end against real registries, read back by real consumers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeferry.bundle.layout import BLOBS_PREFIX, blob_path
from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.errors import OperationError
from kubeferry.lab.containerd import Containerd
from kubeferry.lab.proxy import Exchange, Fault, Proxy
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors
from kubeferry.oci.store import BlobStore
from kubeferry.versions import image_set

pytestmark = pytest.mark.real
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def kubeferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def mirror_flags(registry: Registry) -> list[str]:
    return [flag for mirror in mirrors(registry.url) for flag in ("--mirror", mirror)]


@pytest.fixture(scope="module")
def built(upstream: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A bundle of 1.25.0 built through the CLI; (bundle, cache dir)."""
    work = tmp_path_factory.mktemp("build")
    cache, output = work / "cache", work / "out"
    result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images",
                       *mirror_flags(upstream),
                       "--cache-dir", str(cache), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "images     11" in result.stdout  # 7 kubeadm + 3 calico + busybox (DNS check)
    files = list(output.iterdir())
    assert [f.name for f in files] == ["kubeferry-k8s-1.25.0-el7-amd64.tar"]
    return files[0], cache


def test_bundle_holds_every_image_once_under_upstream_names(built: tuple[Path, Path]) -> None:
    bundle_path, _ = built
    assert kubeferry("bundle", "verify", str(bundle_path)).returncode == 0
    meta = json.loads(kubeferry("bundle", "inspect", str(bundle_path), "--json").stdout)
    names = [image["name"] for image in meta["images"]]
    assert names == list(image_set("1.25.0").images)
    assert meta["sources"]["registries"]["registry.k8s.io"].startswith("http://127.0.0.1:")
    paths = [member["path"] for member in meta["members"]]
    assert len(paths) == len(set(paths))
    blobs = [p for p in paths if p.startswith(BLOBS_PREFIX)]
    # the shared bases (distroless, calico base) are stored once
    layers = {layer for image in meta["images"] for layer in _layers(bundle_path, image)}
    per_image = sum(len(_layers(bundle_path, image)) for image in meta["images"])
    assert len(layers) < per_image
    assert len(blobs) == len(layers) + 2 * len(meta["images"])  # + manifests + configs
    assert all(image["indexDigest"] for image in meta["images"])  # lists were resolved
    human = kubeferry("bundle", "inspect", str(bundle_path)).stdout
    assert "registry.k8s.io/kube-apiserver:v1.25.0" in human and meta["membersDigest"] in human


def _layers(bundle_path: Path, image: dict) -> list[str]:
    manifest = Bundle.open(bundle_path).read_member(blob_path(image["digest"]))
    return [layer["digest"] for layer in json.loads(manifest)["layers"]]


def _unique_blob_bytes(bundle_path: Path, images: list[dict]) -> int:
    sizes = {}
    for image in images:
        manifest = json.loads(Bundle.open(bundle_path).read_member(blob_path(image["digest"])))
        for blob in [manifest["config"], *manifest["layers"]]:
            sizes[blob["digest"]] = blob["size"]
    return sum(sizes.values())


def test_ctr_imports_the_images_tar(built: tuple[Path, Path], containerd: Containerd,
                                    tmp_path: Path) -> None:
    bundle_path, _ = built
    layout = tmp_path / "images.tar"
    assert kubeferry("bundle", "images", str(bundle_path), "--output", str(layout)).returncode == 0
    containerd.ctr("images", "import", str(layout))
    held = containerd.images()
    meta = Bundle.open(bundle_path).metadata
    for image in meta["images"]:
        assert held.get(image["name"]) == image["digest"], image["name"]
        containerd.ctr("images", "check", f"name=={image['name']}")
    check = containerd.ctr("images", "check").stdout
    assert "incomplete" not in check and "missing" not in check


def test_ctr_imports_from_a_pipe(built: tuple[Path, Path]) -> None:
    """``kubeferry bundle images BUNDLE -o - | ctr images import -``: nothing hits the disk."""
    bundle_path, _ = built
    with Containerd() as fresh:
        producer = subprocess.Popen([*KUBEFERRY, "bundle", "images", str(bundle_path), "-o", "-"],
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        consumer = subprocess.run(
            ["ctr", "--address", str(fresh.socket), "-n", "k8s.io", "images", "import", "-"],
            stdin=producer.stdout, capture_output=True, text=True, timeout=300)
        assert producer.wait(timeout=60) == 0
        assert consumer.returncode == 0, consumer.stderr
        assert "registry.k8s.io/kube-apiserver:v1.25.0" in fresh.images()


def test_skopeo_reads_the_images_tar(built: tuple[Path, Path], tmp_path: Path) -> None:
    bundle_path, _ = built
    layout = tmp_path / "images.tar"
    kubeferry("bundle", "images", str(bundle_path), "-o", str(layout))
    for image in Bundle.open(bundle_path).images:
        result = subprocess.run(["skopeo", "inspect", f"oci-archive:{layout}:{image['name']}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["Digest"] == image["digest"]
    copied = tmp_path / "copy"
    name = "docker.io/calico/node:v3.24.5"
    result = subprocess.run(["skopeo", "copy", f"oci-archive:{layout}:{name}", f"dir:{copied}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_warm_rebuild_downloads_nothing(upstream: Registry, built: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    bundle_path, cache = built
    again = build(BuildRequest(kubernetes="1.25.0", mirrors=mirrors(upstream.url),
                               cache_dir=cache, output_dir=tmp_path))
    assert again.downloaded == 0 and again.cached > 0
    assert again.metadata["membersDigest"] == Bundle.open(bundle_path).digest


def test_next_patch_release_downloads_only_new_blobs(upstream: Registry, built: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    _, cache = built
    first = Bundle.open(built[0])
    result = build(BuildRequest(kubernetes="1.25.1", mirrors=mirrors(upstream.url),
                                cache_dir=cache, output_dir=tmp_path))
    shared = _unique_blob_bytes(built[0], [image for image in first.images
                                           if image["name"] in set(image_set("1.25.1").images)])
    assert result.cached >= shared  # etcd, coredns, pause, calico unchanged
    assert 0 < result.downloaded < result.cached


def test_registry_down_is_one_clear_line(tmp_path: Path) -> None:
    result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images",
                       "--mirror", "registry.k8s.io=http://127.0.0.1:9",
                       "--mirror", "docker.io=http://127.0.0.1:9",
                       "--cache-dir", str(tmp_path / "c"), "--output", str(tmp_path / "o"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "o").glob("*.tar"))


def test_https_mirror_with_custom_ca_and_credentials_file(tmp_path: Path) -> None:
    """An internal mirror behind HTTPS (own CA) and htpasswd: --registry-ca, --registry-auth."""
    from kubeferry.lab.registry import write_docker_config
    from kubeferry.lab.upstream import seed_upstream

    with Registry(tmp_path / "mirror", tls=True, htpasswd={"ferry": "s3cret-pass"}) as mirror:
        seed_upstream(mirror.url, "1.25.0", ca_file=mirror.ca_file, auth=("ferry", "s3cret-pass"))
        auth = write_docker_config(tmp_path / "auth.json", mirror.host, "ferry", "s3cret-pass")
        common = ["bundle", "build", "--k8s", "1.25.0", "--include", "images", *mirror_flags(mirror),
                  "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out")]
        no_ca = kubeferry(*common, "--registry-auth", str(auth))
        assert no_ca.returncode == 1 and len(no_ca.stderr.strip().splitlines()) == 1, no_ca.stderr
        no_auth = kubeferry(*common, "--registry-ca", mirror.ca_file)
        assert no_auth.returncode == 1 and len(no_auth.stderr.strip().splitlines()) == 1
        good = kubeferry(*common, "--registry-ca", mirror.ca_file, "--registry-auth", str(auth))
        assert good.returncode == 0, good.stderr
        assert "s3cret-pass" not in good.stdout + good.stderr + no_auth.stderr
    assert kubeferry("bundle", "verify", str(next((tmp_path / "out").glob("*.tar")))).returncode == 0


def test_build_killed_with_9_then_rebuilt_leaves_no_partial(upstream: Registry, built: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """A build killed with -9 while writing leaves ``.NAME.partial-PID``; the next build of the
    same output removes it (issue 15)."""
    output = tmp_path / "out"
    output.mkdir()
    target = output / "kubeferry-k8s-1.25.0-el7-amd64.tar"
    writer = ("import os, sys\nfrom kubeferry.outputs import output_file\n"
              "with output_file(sys.argv[1]) as handle:\n"
              "    handle.write(b'x' * 100000)\n    handle.flush()\n    os.kill(os.getpid(), 9)\n")
    killed = subprocess.run([sys.executable, "-c", writer, str(target)], timeout=60)
    assert killed.returncode == -9 and list(output.glob(".*.partial-*"))
    result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images",
                       *mirror_flags(upstream), "--cache-dir", str(built[1]), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) == [target.name]


def test_a_v_prefixed_release_builds_the_same_bundle_name(upstream: Registry, built: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    result = build(BuildRequest(kubernetes="v1.25.0", include=("images",), mirrors=mirrors(upstream.url),
                                cache_dir=built[1], output_dir=tmp_path))
    assert result.path.name == "kubeferry-k8s-1.25.0-el7-amd64.tar"
    assert result.metadata["kubernetes"] == "1.25.0"
    assert Bundle.open(result.path).bundle_digest.startswith("sha256:")


def test_a_full_cache_disk_is_named_not_retried(upstream: Registry, tmp_path: Path) -> None:
    """ENOSPC while a blob lands in the cache is the machine's fault: one line naming the cache
    file and the cause, exit 1, at once (not 'download kept failing' after retries)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(cache)], check=True, timeout=30)
    try:
        result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images",
                           *mirror_flags(upstream), "--cache-dir", str(cache), "--output",
                           str(tmp_path / "out"))
    finally:
        subprocess.run(["umount", str(cache)], check=True, timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "No space left on device" in lines[0] and "kept failing" not in lines[0]
    assert str(cache) in lines[0]


def test_build_prints_the_bundle_digest_last_and_verify_checks_it(upstream: Registry,
                                                                   built: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images", *mirror_flags(upstream),
                       "--cache-dir", str(built[1]), "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1].split()
    assert last[0] == "digest" and last[1].startswith("sha256:")
    bundle_path = tmp_path / "kubeferry-k8s-1.25.0-el7-amd64.tar"
    assert Bundle.open(bundle_path).bundle_digest == last[1]
    assert Bundle.open(bundle_path).self_checked
    good = kubeferry("bundle", "verify", str(bundle_path), "--digest", last[1])
    assert good.returncode == 0 and "as expected" in good.stdout


def test_a_blob_damaged_in_transit_while_the_file_is_written_leaves_no_bundle(
        upstream: Registry, built: tuple[Path, Path], tmp_path: Path) -> None:
    """The bundle is written while blobs still arrive: a layer that never arrives intact
    fails the build with its digest named, and neither a bundle nor a temp file is left."""
    blobs = [m for m in Bundle.open(built[0]).members if m["path"].startswith(BLOBS_PREFIX)]
    layer = "sha256:" + max(blobs, key=lambda m: m["size"])["sha256"]
    damaged = bytearray(upstream.blob_path(layer).read_bytes())
    damaged[-1] ^= 0xFF

    def rule(exchange: Exchange) -> Fault | None:
        if exchange.method == "GET" and exchange.path.endswith(layer):
            return Fault(status=200, body=bytes(damaged))
        return None

    output = tmp_path / "out"
    with Proxy(upstream.url, rule) as proxy:
        request = BuildRequest(kubernetes="1.25.0", include=("images",), mirrors=mirrors(proxy.url),
                               cache_dir=tmp_path / "cache", output_dir=output)
        with pytest.raises(OperationError) as failed:
            build(request)
    assert layer.partition(":")[2][:12] in str(failed.value)
    assert not list(output.iterdir())
    assert not BlobStore(tmp_path / "cache").has(layer)


def test_a_blob_cut_then_sent_whole_is_written_while_it_arrives(
        upstream: Registry, built: tuple[Path, Path], tmp_path: Path) -> None:
    """The writer reads a blob while its download appends it: a transfer cut midway and
    resumed, whose server then ignores the Range and sends it whole again (the partial file
    started over), still gives a bundle identical, member for member, to an unhurt build."""
    blobs = [m for m in Bundle.open(built[0]).members if m["path"].startswith(BLOBS_PREFIX)]
    layer = "sha256:" + max(blobs, key=lambda m: m["size"])["sha256"]
    whole = upstream.blob_path(layer).read_bytes()

    def rule(exchange: Exchange) -> Fault | None:
        if exchange.method != "GET" or not exchange.path.endswith(layer):
            return None
        return Fault(status=200, body=whole) if exchange.header("Range") else Fault(cut_after=len(whole) // 2)

    output = tmp_path / "out"
    with Proxy(upstream.url, rule) as proxy:
        request = BuildRequest(kubernetes="1.25.0", include=("images",), mirrors=mirrors(proxy.url),
                               cache_dir=tmp_path / "cache", output_dir=output)
        result = build(request)
        ranges = [get.header("Range") for get in proxy.requests("GET", layer)]
    assert ranges == [None, f"bytes={len(whole) // 2}-"]
    assert Bundle.open(result.path).members == Bundle.open(built[0]).members
    verified = kubeferry("bundle", "verify", str(result.path))
    assert verified.returncode == 0, verified.stderr


def test_a_wrong_partial_file_from_an_earlier_run_is_fetched_again_not_bundled(
        upstream: Registry, built: tuple[Path, Path], tmp_path: Path) -> None:
    """A partial download an interrupted run left, holding wrong bytes: the download resumes
    it, finds the whole wrong and fetches the blob again; the writer, which follows only the
    partial files this run began, bundles the right bytes."""
    blobs = [m for m in Bundle.open(built[0]).members if m["path"].startswith(BLOBS_PREFIX)]
    largest = max(blobs, key=lambda m: m["size"])
    layer = "sha256:" + largest["sha256"]
    BlobStore(tmp_path / "cache").partial_path(layer).write_bytes(b"\0" * (largest["size"] // 2))

    def late(exchange: Exchange) -> Fault | None:  # the writer reaches the layer before its bytes
        if exchange.method == "GET" and exchange.path.endswith(layer):
            time.sleep(1.0)
        return None

    with Proxy(upstream.url, late) as proxy:
        request = BuildRequest(kubernetes="1.25.0", include=("images",), mirrors=mirrors(proxy.url),
                               cache_dir=tmp_path / "cache", output_dir=tmp_path / "out")
        result = build(request)
    assert Bundle.open(result.path).members == Bundle.open(built[0]).members
