"""Registry client pull: 1 vs 4 parallel blob downloads, and a warm rebuild.

Stand-in images with realistic compressed layer sizes in a local distribution registry
(plain HTTP on loopback). Prints wall times and ratios measured in this run; run it
again rather than quoting old numbers.

    .venv/bin/python bench/registry_pull.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_images import push_image, standin_layer
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore

# compressed MB per image, roughly upstream's (issue 2); a 2 MB base layer is shared
IMAGES = {
    "kube-apiserver": 34, "kube-controller-manager": 31, "kube-scheduler": 15,
    "kube-proxy": 20, "etcd": 100, "coredns": 14, "pause": 0.3,
}  # fmt: skip


def pull_all(url: str, cache: Path, workers: int) -> tuple[float, int]:
    store = BlobStore(cache)
    start = time.perf_counter()
    downloaded = 0
    with RegistryClient({"registry.k8s.io": url}) as client:
        for name in IMAGES:
            ref = ImageReference.parse(f"registry.k8s.io/{name}:bench")
            downloaded += client.pull(ref, store, workers=workers).bytes_downloaded
    return time.perf_counter() - start, downloaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp, Registry(Path(tmp) / "r") as reg:
        base = standin_layer("base", int(2e6 * args.scale), seed=1)
        for name, megabytes in IMAGES.items():
            size = int(megabytes * 1e6 * args.scale)
            layers = [base, standin_layer(name, size // 2, 2), standin_layer(name, size // 2, 3)]
            push_image(reg.url, name, "bench", layers, shape="oci-index", platforms=("amd64",))
        serial, total = pull_all(reg.url, Path(tmp) / "serial", workers=1)
        parallel, _ = pull_all(reg.url, Path(tmp) / "parallel", workers=4)
        warm, warm_bytes = pull_all(reg.url, Path(tmp) / "parallel", workers=4)
    print(f"images: {len(IMAGES)}, unique bytes downloaded cold: {total / 1e6:.1f} MB")
    print(f"cold, 1 worker : {serial:.2f} s ({total / 1e6 / serial:.0f} MB/s)")
    print(f"cold, 4 workers: {parallel:.2f} s (1-worker/4-worker = {serial / parallel:.2f}x)")
    print(f"warm rebuild   : {warm:.2f} s, {warm_bytes} bytes downloaded")


if __name__ == "__main__":
    main()
