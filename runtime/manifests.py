"""Render the manifests in deploy/ for a given namespace, image and set of target namespaces.

The files in deploy/ use the namespace `agent-autoscaler` and the image
`agent-autoscaler:0.1.0`. Rendering replaces both, and replaces the example RoleBinding
for the namespace `default` with one RoleBinding per target namespace, which is what
limits the daemon to the namespaces it is configured for.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

def _find_deploy_dir() -> Path:
    """Return deploy/ of a source checkout, or the copy a regular install puts under share/."""
    checkout = Path(__file__).resolve().parent.parent / "deploy"
    installed = Path(sys.prefix) / "share" / "agent-autoscaler" / "deploy"
    return checkout if checkout.is_dir() else installed


DEPLOY_DIR = _find_deploy_dir()
DEFAULT_NAMESPACE = "agent-autoscaler"
DEFAULT_IMAGE = "agent-autoscaler:0.1.0"
# Applying in this order creates each object after the ones it refers to.
FILE_ORDER = ("namespace.yaml", "crd.yaml", "rbac.yaml", "configmap.yaml", "service.yaml", "deployment.yaml")
TARGET_BINDING_LABEL = "agent-autoscaler/target-namespace-binding"
# RFC 1123 label, which Kubernetes requires of namespace names.
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(ValueError):
    """Raised for an invalid namespace or image, naming the value and the fix."""


def check_namespace(value: str, option: str) -> None:
    if len(value) > 63 or not NAMESPACE_PATTERN.match(value):
        raise ManifestError(
            f"{option} {value!r} is not a valid namespace name; use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def load_documents(deploy_dir: Path = DEPLOY_DIR) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for file_name in FILE_ORDER:
        path = deploy_dir / file_name
        if not path.is_file():
            raise ManifestError(f"manifest {path} not found; reinstall agent-autoscaler or run it from a source checkout")
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return documents


def _retarget(document: dict[str, Any], namespace: str, image: str, workload_namespace: str = "default") -> dict[str, Any]:
    document = copy.deepcopy(document)
    metadata = document.setdefault("metadata", {})
    if document["kind"] == "Namespace":
        metadata["name"] = namespace
    elif metadata.get("namespace") == DEFAULT_NAMESPACE:
        metadata["namespace"] = namespace
    for subject in document.get("subjects", []):
        if subject.get("namespace") == DEFAULT_NAMESPACE:
            subject["namespace"] = namespace
    if document["kind"] == "Deployment":
        for container in document["spec"]["template"]["spec"]["containers"]:
            if container.get("image") == DEFAULT_IMAGE:
                container["image"] = image
    if document["kind"] == "ConfigMap":
        data = document.get("data", {})
        for key, text in data.items():
            text = text.replace(f"lease_namespace: {DEFAULT_NAMESPACE}", f"lease_namespace: {namespace}")
            # The example workload lives in the first namespace the daemon may scale in,
            # so that the rendered config matches the rendered RBAC.
            data[key] = text.replace("namespace: default", f"namespace: {workload_namespace}").replace('namespace="default"', f'namespace="{workload_namespace}"')
    return document


def render_documents(namespace: str, image: str, target_namespaces: list[str], deploy_dir: Path = DEPLOY_DIR) -> list[dict[str, Any]]:
    """Return the deploy/ objects for `namespace` and `image`, with one RoleBinding per target namespace."""
    check_namespace(namespace, "--namespace")
    for target in target_namespaces:
        check_namespace(target, "--target-namespace")
    if not image or any(character.isspace() for character in image):
        raise ManifestError(f"--image {image!r} is not a container image reference; use for example registry.example.com/agent-autoscaler:0.1.0")

    rendered: list[dict[str, Any]] = []
    for document in load_documents(deploy_dir):
        labels = document.get("metadata", {}).get("labels", {})
        if document["kind"] == "RoleBinding" and labels.get(TARGET_BINDING_LABEL) == "true":
            for target in dict.fromkeys(target_namespaces):
                binding = _retarget(document, namespace, image)
                binding["metadata"]["namespace"] = target
                rendered.append(binding)
            continue
        rendered.append(_retarget(document, namespace, image, target_namespaces[0]))
    return rendered


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings, such as the ConfigMap's config file, as literal blocks."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_text)


def render(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE, target_namespaces: list[str] | None = None) -> str:
    """Return the manifests as one multi-document YAML text, ready for `kubectl apply -f -`."""
    documents = render_documents(namespace, image, target_namespaces or ["default"])
    header = (
        "# Generated by `agent-autoscaler manifests`. Replace the example workload and budget in the\n"
        "# ConfigMap with your own and check them with `agent-autoscaler validate-config` first.\n"
    )
    return header + yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False, explicit_start=True)
