"""Seeding Harbor from a bundle: every image under its mapped names, nothing sent twice."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from harbor_helpers import admin, call, cert_dir, settings_for, skopeo

from kubeferry.bundle.images import BundleBlobs
from kubeferry.bundle.layout import blob_path
from kubeferry.bundle.metadata import RecordedImages
from kubeferry.bundle.reader import Bundle
from kubeferry.errors import OperationError
from kubeferry.installer.harbor_names import harbor_names
from kubeferry.installer.harbor_seed import plan_seed, seed
from kubeferry.installer.kubeadm_config import kubeadm_image_names
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.pki import make_ca
from kubeferry.oci.auth import Credentials
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.versions import image_set

pytestmark = pytest.mark.real
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def kubeferry_seed(harbor: HarborStandIn, bundle: Path, *extra: str, password: str | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["harbor", "seed", "--bundle", str(bundle), "--harbor", harbor.url,
            "--ca-file", harbor.ca_file, *extra]
    if password is not None:
        args.append("--password-stdin")
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=300,
                          input=(password + "\n") if password is not None else None,
                          env=env)


def uploads(harbor: HarborStandIn) -> list[str]:
    """Requests that carry image content into the registry (blob uploads, manifests)."""
    return [f"{e.method} {e.path}" for e in harbor.requests() if e.path.startswith("/v2/")
            and e.method in ("POST", "PATCH", "PUT")]


def unique_blobs(bundle: Bundle) -> dict[str, int]:
    return {blob.digest: blob.size for image in BundleBlobs(bundle).images() for blob in image.blobs}


def test_seed_cli_then_every_name_resolves_and_a_reseed_sends_nothing(
        harbor: HarborStandIn, bundle_file: Path, bundle: Bundle, tmp_path: Path) -> None:
    settings = settings_for(harbor)
    first = kubeferry_seed(harbor, bundle_file, password=harbor.admin_password)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"seeded {settings.repository}: created project google_containers;")
    assert harbor.model.project("google_containers").public  # type: ignore[union-attr]
    # each blob crossed once: one monolithic PUT per unique digest, the rest mounted
    blob_puts = [u for u in uploads(harbor) if u.startswith("PUT") and "/blobs/uploads/" in u]
    assert len(blob_puts) == len(unique_blobs(bundle))
    assert any("mount=" in e.query for e in harbor.requests("POST"))

    # every name, anonymously (the project is public), by skopeo trusting only the lab CA
    certs = cert_dir(harbor, tmp_path / "certs")
    for image in bundle.images:
        for name in harbor_names(image["name"], settings):
            inspected = skopeo("inspect", "--cert-dir", str(certs), f"docker://{name}")
            assert inspected.returncode == 0, (name, inspected.stderr)
            assert json.loads(inspected.stdout)["Digest"] == image["digest"], name
    # what kubeadm (imageRepository = the project) and calico.yaml ask for is all there
    images = image_set("1.25.0")
    wanted = [*kubeadm_image_names(RecordedImages.of_release(images), settings.repository),
              *(harbor_names(name, settings)[0] for name in images.calico_images)]
    with RegistryClient({harbor.host: harbor.url}, Credentials(), harbor.ca_file) as anonymous:
        for name in wanted:
            ref = ImageReference(harbor.host, name[len(harbor.host) + 1:].rsplit(":", 1)[0],
                                 name.rsplit(":", 1)[1])
            assert anonymous.manifest_digest(ref), name

    harbor.clear()
    again = kubeferry_seed(harbor, bundle_file, password=harbor.admin_password)
    assert again.returncode == 0, again.stderr
    assert "12 images: 0 pushed, 0 blobs sent (0 B), 0 mounted" in again.stdout
    assert uploads(harbor) == []  # HEADs only
    assert plan_seed(bundle, settings, harbor.admin_password).lines() == []


def test_plan_then_seed_with_the_python_api(harbor: HarborStandIn, bundle: Bundle) -> None:
    settings = settings_for(harbor)
    blobs = unique_blobs(bundle)
    plan = plan_seed(bundle, settings, harbor.admin_password)
    assert plan.projects_to_create == ["google_containers"]
    assert (plan.images, plan.images_to_push) == (12, 12)  # 11 images + the coredns alias
    assert (plan.blobs_to_upload, plan.bytes_to_upload) == (len(blobs), sum(blobs.values()))
    assert harbor.model.project("google_containers") is None  # planning changed nothing
    assert uploads(harbor) == []
    progress: list[int] = []
    result = seed(bundle, settings, harbor.admin_password, workers=3, progress=progress.append)
    assert result.projects_created == ["google_containers"]
    assert (result.blobs_sent, result.bytes_sent) == (len(blobs), sum(blobs.values()))
    assert sum(progress) == result.bytes_sent
    assert result.blobs_mounted == plan.blobs_to_mount > 0
    assert result.manifests_pushed == 12 and result.warnings == []


def test_harbor_down_during_seeding_then_a_rerun_completes(harbor: HarborStandIn,
                                                            bundle: Bundle) -> None:
    settings = settings_for(harbor)
    sent_before: list[int] = []

    def stop_harbor_after_the_first_blob(sent: int) -> None:
        sent_before.append(sent)
        if len(sent_before) == 1:
            harbor.stop()

    with pytest.raises(OperationError) as failure:
        seed(bundle, settings, harbor.admin_password, workers=1, retries=1,
             progress=stop_harbor_after_the_first_blob)
    message = str(failure.value)
    assert message.startswith(f"cannot reach Harbor at {harbor.url}: connection refused"), message
    assert "run again" in message and "\n" not in message

    harbor.start()  # same working directory: projects and blobs survived
    result = seed(bundle, settings, harbor.admin_password, workers=1)
    total = sum(unique_blobs(bundle).values())
    assert 0 < result.bytes_sent <= total - sum(sent_before)
    assert result.projects_created == []  # made before Harbor went down
    assert result.manifests_pushed == 12
    assert plan_seed(bundle, settings, harbor.admin_password).lines() == []


def test_a_tampered_bundle_blob_is_refused_before_harbor_stores_it(
        harbor: HarborStandIn, bundle_file: Path, tmp_path: Path) -> None:
    tampered = tmp_path / bundle_file.name
    shutil.copy(bundle_file, tampered)
    bundle = Bundle.open(tampered)
    blobs = BundleBlobs(bundle)
    layer = max((blob for image in blobs.images() for blob in image.layers), key=lambda b: b.size)
    offset = bundle.offsets()[blob_path(layer.digest)] + layer.size // 2
    with open(tampered, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(OperationError, match=f"blob {layer.digest} does not match its sha256"):
        seed(Bundle.open(tampered), settings_for(harbor), harbor.admin_password, retries=0)
    assert harbor.registry is not None
    assert not harbor.registry.blob_path(layer.digest).exists()


def test_a_private_project_is_used_but_warned_about(harbor: HarborStandIn, bundle: Bundle) -> None:
    assert call(harbor, "POST", "/projects", auth=admin(harbor),
                json={"project_name": "google_containers"}).status_code == 201
    result = seed(bundle, settings_for(harbor), harbor.admin_password)
    assert result.projects_created == []
    assert result.warnings == ["Harbor project google_containers is private: the nodes pull without"
                               " credentials; make it public in Harbor"]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_cli_failures_are_one_line(harbor: HarborStandIn, bundle_file: Path, tmp_path: Path) -> None:
    password = harbor.admin_password
    wrong = kubeferry_seed(harbor, bundle_file, password="not-it")
    assert wrong.returncode == 2
    assert "refused the credentials of user 'admin' (HTTP 401)" in one_line(wrong)
    assert "not-it" not in wrong.stderr + wrong.stdout

    bad_project = kubeferry_seed(harbor, bundle_file, "--project", "Google", password=password)
    assert bad_project.returncode == 2 and "--project 'Google'" in one_line(bad_project)

    no_password = kubeferry_seed(harbor, bundle_file, env={"PATH": "/usr/bin:/bin"})
    assert no_password.returncode == 2 and "--password-stdin" in one_line(no_password)

    from_env = kubeferry_seed(harbor, bundle_file, "--project", "envproject",
                              env={"PATH": "/usr/bin:/bin", "KUBEFERRY_HARBOR_PASSWORD": password})
    assert from_env.returncode == 0, from_env.stderr

    missing_ca = kubeferry_seed(harbor, bundle_file, "--ca-file", str(tmp_path / "nope.pem"),
                                password=password)
    assert missing_ca.returncode == 2 and "--ca-file" in one_line(missing_ca)

    other_ca = make_ca(tmp_path / "other-ca").cert_file  # did not sign the stand-in's certificate
    untrusted = kubeferry_seed(harbor, bundle_file, "--ca-file", str(other_ca), password=password)
    assert untrusted.returncode == 1
    assert "cannot verify Harbor's certificate" in one_line(untrusted)

    bad_url = kubeferry_seed(harbor, bundle_file, "--harbor", "harbor.example.local",
                             password=password)
    assert bad_url.returncode == 2 and "expected https://HOST[:PORT]" in one_line(bad_url)

    harbor.stop()
    down = kubeferry_seed(harbor, bundle_file, password=password)
    assert down.returncode == 1
    assert one_line(down) == f"kubeferry: cannot reach Harbor at {harbor.url}: connection refused"



def test_an_edited_image_list_is_refused(harbor: HarborStandIn, bundle_file: Path,
                                         tmp_path: Path) -> None:
    """The names Harbor gets come from the metadata: they must agree with images/index.json."""
    edited = tmp_path / bundle_file.name
    with tarfile.open(bundle_file) as source, tarfile.open(edited, "w", format=tarfile.PAX_FORMAT) as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "kubeferry-bundle.json":
                metadata = json.loads(data)
                first, second = metadata["images"][0], metadata["images"][1]
                first["name"], second["name"] = second["name"], first["name"]
                # re-signed, as a careful attacker would: the index check must still refuse it
                from kubeferry.bundle.format import SELF_CHECK, metadata_self_check

                metadata[SELF_CHECK] = metadata_self_check(metadata)
                data = json.dumps(metadata).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    with pytest.raises(OperationError, match="does not match images/index.json"):
        seed(Bundle.open(edited), settings_for(harbor), harbor.admin_password)
    assert harbor.model.project("google_containers") is None  # refused before touching Harbor


def test_a_user_who_may_not_push_is_told_so(harbor: HarborStandIn, bundle: Bundle) -> None:
    """dev logs in fine but does not own google_containers (the admin made it)."""
    assert call(harbor, "POST", "/projects", auth=admin(harbor), json={
        "project_name": "google_containers", "metadata": {"public": "true"}}).status_code == 201
    settings = replace(settings_for(harbor), username="dev")
    with pytest.raises(OperationError, match="refused a push by user 'dev' into project google_containers"):
        seed(bundle, settings, "dev-pass-1", retries=0)


def test_seed_from_the_parts_of_a_split_bundle(harbor: HarborStandIn, bundle_file: Path,
                                               tmp_path: Path) -> None:
    """``harbor seed`` takes the first part and reads every blob across the parts in place."""
    split = subprocess.run([*KUBEFERRY, "bundle", "split", str(bundle_file), "--size", "99991",
                            "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert split.returncode == 0, split.stderr
    first = tmp_path / f"{bundle_file.name}.001"
    assert (tmp_path / f"{bundle_file.name}.002").is_file()
    seeded = kubeferry_seed(harbor, first, password=harbor.admin_password)
    assert seeded.returncode == 0, seeded.stderr
    assert len(uploads(harbor)) > 0
    again = kubeferry_seed(harbor, first, password=harbor.admin_password)
    assert again.returncode == 0 and "0 pushed, 0 blobs sent (0 B)" in again.stdout, again.stdout
