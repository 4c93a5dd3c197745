#!/usr/bin/env python3
"""Whether the OMS services accept the settings the Helm chart gives them, asked of the binaries.

    settings.py --bin DIR [--bus kafka|nats] [RENDERED.yaml]    (stdin without a file)
    settings.py --bin DIR [--bus kafka|nats] --self-test RENDERED.yaml

For every Deployment whose container runs an OMS binary, and every migration Job, it runs
`DIR/<binary> --dump-config` the way the pod would configure it: the file OMS_CONFIG names, taken
from the ConfigMap the container mounts there and written to a temporary file, and the
container's environment and nothing else (plus PATH). A Job runs `<binary> migrate`, which
resolves the same configuration; it mounts no ConfigMap, so its environment alone must resolve.
Secrets come from the rendered Secrets when the chart makes them; a Secret of the user's (an
`existingSecret`) is stood in for by a placeholder of the right form. The checks, printed as
`RULE Kind/name: why` (exit status 1 if any):

  rejected     the binary refused its settings: an unknown setting in its section or in an
               OMS_<SERVICE>__ variable's name (the services deny unknown fields), or a value of
               the wrong type
  config-path  OMS_CONFIG is missing from a Deployment, or names no file that the container
               mounts from a ConfigMap of the release: the pod would not start
  secret       a variable refers to a key that the chart's own Secret does not have
  listen       a Deployment's service does not listen on 0.0.0.0:<its containerPort>, which only
               the ConfigMap says (the default is 127.0.0.1): its section was not read. Each binary
               reads only its own section, so a misnamed one is no error, only ignored
  bus          a service's bus.kind is not the values' (--bus)
  env-section  an OMS_ variable for another section than the binary's: silently ignored
  missing      no Deployment runs one of the OMS binaries, or a binary is not in DIR or is one
               whose section this does not know
  unsupported  a way of giving settings that this does not follow (envFrom, a valueFrom other
               than secretKeyRef): the check would be blind to it

--self-test breaks the rendering in memory (a misspelled setting, a misnamed variable, a renamed
section, ...) and fails unless each break is caught by its rule (and the unbroken one passes).

Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import base64
import copy
import os
import posixpath
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass

import yaml

# The rules check beside this file: the same way of naming objects and reading settings.
from check import get_path, ident

# Each binary and the section of the settings it reads (the section its main.rs names).
SECTIONS = {
    "oms-gateway": "gateway",
    "oms-api": "api",
    "oms-registry": "registry",
    "oms-inventory": "inventory",
    "oms-notifications": "notifications",
    "oms-payments": "payments",
    "oms-status": "status",
}
SETTINGS_KEY = "oms.toml"


@dataclass(frozen=True)
class Failure:
    rule: str
    obj: str
    why: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.rule} {self.obj}: {self.why}"
        if self.detail:
            text += "\n" + "\n".join(f"    {line}" for line in self.detail.rstrip().splitlines())
        return text


def pod_spec(doc: dict) -> dict:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def binary_of(container: dict) -> str | None:
    command = container.get("command") or []
    name = posixpath.basename(str(command[0])) if command else ""
    return name if name.startswith("oms-") else None


def secrets_of(docs: list[dict]) -> dict[str, dict[str, str]]:
    """The rendered Secrets' contents; stringData wins over data, as the API server merges them."""
    found = {}
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        content = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
        content.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        found[doc["metadata"]["name"]] = content
    return found


def config_maps_of(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}


def placeholder(name: str) -> str:
    """A stand-in for a secret of the user's, of the form the service parses it in."""
    if name.upper().endswith("__USERS"):
        # A list: any string here would be refused as not one.
        return "[]"
    if "url" in name.lower():
        return "postgres://placeholder@db:5432/x"
    return "placeholder"


def environment(obj: str, container: dict, secrets: dict) -> tuple[dict[str, str], list[Failure]]:
    env, failures = {}, []
    if container.get("envFrom"):
        failures.append(Failure("unsupported", obj, "envFrom: its variables are not checked"))
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = str(var.get("value", ""))
            continue
        ref = var["valueFrom"].get("secretKeyRef")
        if ref is None:
            failures.append(Failure("unsupported", obj, f"{name}: valueFrom {sorted(var['valueFrom'])}"))
            continue
        secret = secrets.get(ref["name"])
        if secret is None:
            env[name] = placeholder(name)
        elif ref["key"] in secret:
            env[name] = secret[ref["key"]]
        elif not ref.get("optional"):
            failures.append(Failure("secret", obj, f"{name}: the chart's Secret {ref['name']} has no key {ref['key']}"))
    return env, failures


def settings_file(doc: dict, container: dict, path: str, config_maps: dict) -> str | None:
    """The text of the ConfigMap key mounted at `path` in the container, if one is."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        source = volumes.get(mount["name"], {}).get("configMap")
        if not source or source.get("name") not in config_maps:
            continue
        data = config_maps[source["name"]]
        files = {i["key"]: i["path"] for i in source.get("items") or []} or {k: k for k in data}
        for key, rel in files.items():
            if mount.get("subPath"):
                if rel != mount["subPath"]:
                    continue
                where = mount["mountPath"]
            else:
                where = posixpath.join(mount["mountPath"], rel)
            if posixpath.normpath(where) == posixpath.normpath(path) and key in data:
                return data[key]
    return None


def check_container(doc, container, binary, bin_dir, bus, secrets, config_maps):
    """(a line saying what passed, or None; the failures) for one container."""
    obj = ident(doc)
    section = SECTIONS.get(binary)
    if section is None:
        return None, [Failure("missing", obj, f"{binary} is not an OMS binary this knows (SECTIONS)")]
    env, failures = environment(obj, container, secrets)
    prefix = f"OMS_{section.upper()}__"
    for name in env:
        # The services take variables by prefix, case-insensitively (figment's Env::prefixed).
        if name.upper().startswith("OMS_") and name != "OMS_CONFIG" and not name.upper().startswith(prefix):
            failures.append(Failure("env-section", obj, f"{name}: {binary} reads only {prefix}* and ignores it"))
    deployment = doc["kind"] == "Deployment"
    if deployment and "OMS_CONFIG" not in env:
        failures.append(Failure("config-path", obj, "no OMS_CONFIG: the service would run on its defaults"))
    executable = os.path.join(bin_dir, binary)
    if not os.access(executable, os.X_OK):
        return None, failures + [Failure("missing", obj, f"no {executable} (build the binaries first)")]

    with tempfile.TemporaryDirectory(prefix="oms-settings-") as tmp:
        if "OMS_CONFIG" in env:
            text = settings_file(doc, container, env["OMS_CONFIG"], config_maps)
            if text is None:
                failures.append(Failure("config-path", obj, f"OMS_CONFIG={env['OMS_CONFIG']} is no file the container mounts from the release's ConfigMaps"))
                return None, failures
            env["OMS_CONFIG"] = os.path.join(tmp, SETTINGS_KEY)
            with open(env["OMS_CONFIG"], "w", encoding="utf-8") as f:
                f.write(text)
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        what = f"{binary} --dump-config"
        try:
            done = subprocess.run([executable, "--dump-config"], env=run_env, capture_output=True,
                                  text=True, timeout=60, cwd=tmp)
        except subprocess.TimeoutExpired:
            return None, failures + [Failure("rejected", obj, f"{what} did not finish within 60 s")]
    if done.returncode != 0:
        return None, failures + [Failure("rejected", obj, f"{what} exited {done.returncode}", done.stderr)]
    try:
        dumped = tomllib.loads(done.stdout).get(section) or {}
    except tomllib.TOMLDecodeError as e:
        return None, failures + [Failure("rejected", obj, f"{what} printed no TOML: {e}", done.stdout)]

    said = []
    if deployment:
        ports = container.get("ports") or []
        port = next((p["containerPort"] for p in ports if p.get("name") == "http"),
                    ports[0]["containerPort"] if ports else None)
        want = f"0.0.0.0:{port}"
        if dumped.get("listen") != want:
            failures.append(Failure("listen", obj, f"{binary} listens on {dumped.get('listen')}, not {want}: it did not read its [{section}] section of OMS_CONFIG"))
        said.append(f"listen {want}")
        kind = get_path(dumped, "bus.kind")
        if kind is not None:
            if kind != bus:
                failures.append(Failure("bus", obj, f"{binary} runs on bus.kind {kind}, not {bus}"))
            said.append(f"bus {kind}")
    else:
        said.append("its environment alone")
    said.append(f"{len(env)} variable(s)")
    return (None if failures else f"ok  {obj}: {what} ({', '.join(said)})"), failures


def check(docs: list[dict], bin_dir: str, bus: str) -> tuple[list[str], list[Failure]]:
    secrets, config_maps = secrets_of(docs), config_maps_of(docs)
    passed, failures, deployed = [], [], set()
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "Job"):
            continue
        spec = pod_spec(doc)
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            binary = binary_of(container)
            if binary is None:
                continue
            if doc["kind"] == "Deployment":
                deployed.add(binary)
            line, found = check_container(doc, container, binary, bin_dir, bus, secrets, config_maps)
            failures += found
            if line:
                passed.append(line)
    for binary in sorted(set(SECTIONS) - deployed):
        failures.append(Failure("missing", "rendering", f"no Deployment runs {binary}"))
    return passed, failures


# --- the self-test: break the rendering, one way at a time -------------------------------------


def find(docs, kind, component):
    for doc in docs:
        if doc.get("kind") == kind and (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component:
            return doc
    raise LookupError(f"no {kind} {component} in the rendering")


def the_settings(docs) -> dict:
    return next(d for d in docs if d.get("kind") == "ConfigMap" and SETTINGS_KEY in (d.get("data") or {}))


def edit_section(docs, section, old, new):
    """Replaces `old` by `new` in one section of the settings file only."""
    cm = the_settings(docs)
    text = cm["data"][SETTINGS_KEY]
    start = text.index(f"[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    assert old in text[start:end], f"no {old!r} in [{section}]"
    cm["data"][SETTINGS_KEY] = text[:start] + text[start:end].replace(old, new, 1) + text[end:]


def env_of(doc) -> list[dict]:
    return pod_spec(doc)["containers"][0]["env"]


def rename_env(doc, old, new):
    var = next(v for v in env_of(doc) if v["name"] == old)
    var["name"] = new


def mutations(bus: str):
    """(what, the rule that must catch it, on which object, how) for each break."""
    other = "nats" if bus == "kafka" else "kafka"

    def chart_secret_without(docs, key):
        secret = next(d for d in docs if d.get("kind") == "Secret" and key in (d.get("stringData") or {}))
        secret["stringData"][f"{key}-old"] = secret["stringData"].pop(key)

    def config_elsewhere(docs):
        var = next(v for v in env_of(find(docs, "Deployment", "registry")) if v["name"] == "OMS_CONFIG")
        var["value"] = "/etc/oms/oms.toml"

    return [
        ("a misspelled setting in the API's section", "rejected", ("Deployment", "api"),
         lambda d: edit_section(d, "api", "database.max_connections", "database.max_conections")),
        ("the API's database URL in a misnamed variable", "rejected", ("Deployment", "api"),
         lambda d: rename_env(find(d, "Deployment", "api"), "OMS_API__DATABASE__URL", "OMS_API__DATABASE__URI")),
        ("the API's section renamed", "listen", ("Deployment", "api"),
         lambda d: edit_section(d, "api", "[api]\n", "[apii]\n")),
        ("the inventory on another bus than the values'", "bus", ("Deployment", "inventory"),
         lambda d: edit_section(d, "inventory", f'bus.kind = "{bus}"', f'bus.kind = "{other}"')),
        ("a migration's variable for another section", "env-section", ("Job", "migrate-gateway"),
         lambda d: rename_env(find(d, "Job", "migrate-gateway"), "OMS_GATEWAY__DATABASE__URL", "OMS_GATEWAYS__DATABASE__URL")),
        ("OMS_CONFIG where no ConfigMap is mounted", "config-path", ("Deployment", "registry"), config_elsewhere),
        ("the chart's Secret without the cache URL", "secret", ("Deployment", "api"),
         lambda d: chart_secret_without(d, "cache-url")),
    ]


def self_test(docs: list[dict], bin_dir: str, bus: str) -> int:
    _, clean = check(copy.deepcopy(docs), bin_dir, bus)
    if clean:
        print("self-test: the unbroken rendering already fails:", file=sys.stderr)
        for f in clean:
            print(f"  {f}", file=sys.stderr)
        return 1
    missed = 0
    cases = mutations(bus)
    for what, rule, (kind, component), mutate in cases:
        broken = copy.deepcopy(docs)
        mutate(broken)
        target = ident(find(broken, kind, component))
        _, found = check(broken, bin_dir, bus)
        hit = next((f for f in found if f.rule == rule and f.obj == target), None)
        if hit:
            print(f"caught  {what}: {str(hit).splitlines()[0]}")
        else:
            missed += 1
            got = ", ".join(sorted({f"{f.rule} {f.obj}" for f in found})) or "none"
            print(f"MISSED  {what}: no {rule} failure of {target} (got: {got})")
    print(f"{len(cases) - missed} passed, {missed} failed")
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rendered", nargs="?", help="the output of helm template (default: stdin)")
    parser.add_argument("--bin", required=True, help="the directory of the OMS binaries")
    parser.add_argument("--bus", choices=("kafka", "nats"), default="kafka",
                        help="the bus the values choose (bus.kind)")
    parser.add_argument("--self-test", action="store_true",
                        help="break the rendering one way at a time, and check each is caught")
    args = parser.parse_args()
    if args.rendered and args.rendered != "-":
        with open(args.rendered, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    else:
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    if args.self_test:
        return self_test(docs, args.bin, args.bus)
    passed, failures = check(docs, args.bin, args.bus)
    for line in passed:
        print(line)
    for f in failures:
        print(f)
    print(f"{len(passed)} object(s) took their settings, {len(failures)} failure(s) ({args.bus})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
