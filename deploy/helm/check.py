#!/usr/bin/env python3
"""The rules the OMS Helm chart keeps, checked on its rendered manifests (`helm template`).

    check.py [--profile default|external|nats] RENDERED.yaml
    check.py --self-test RENDERED-DEFAULT.yaml

Each broken rule is printed as `RULE Kind/name: why`, and the exit status is 1 if there is one.
kubernetes-validate checks every object against the Kubernetes schemas; it only warns about
custom resources (Strimzi's, CloudNativePG's, KEDA's, the Prometheus Operator's), and checks no
rule that spans objects, which is what this does:

  secret-in-configmap  a ConfigMap holds a secret: a setting the services treat as one (a
                       database, cache or NATS URL, a password, a key, a token), or a value that
                       is one (a URL with a password, a private key, a Stripe key)
  secret-literal-env   a container gets a secret as a literal environment value
  probes               a Deployment's container lacks a readiness or liveness probe (an OMS
                       service's on /health/ready and /health/live)
  resources            a container lacks CPU and memory requests or a memory limit
  worker-scaledobject  a saga worker has no ScaledObject on its group and topics (on Kafka)
  partitions           a ScaledObject may scale past the partitions of a topic its worker reads
                       (each replica is as many members as its consumer.lanes)
  autoscaled-replicas  an autoscaled Deployment sets replicas (an upgrade would reset them)
  hpa                  the gateway or the API has no HPA on CPU
  migrate-at-start     a Deployment's container runs `migrate`
  migration-hook       a service's migrations are not a pre-install,pre-upgrade hook Job
  migration-order      a migration hook needs something the release makes only after it, or a
                       database hook could be deleted and made again by Helm
  exposure             a Service other than the gateway's is a LoadBalancer or NodePort, or an
                       Ingress leads elsewhere than the gateway
  pdb                  a Deployment has no PodDisruptionBudget
  networkpolicy        a non-gateway pod is not restricted by a NetworkPolicy, or is open to
                       pods other than its callers
  kafka-cluster        the Strimzi Kafka is not KRaft on node pools with 3 brokers, replication
                       3 and min.insync.replicas 2, or the services disagree with it
  kafka-topics         a topic's KafkaTopic is missing, or has fewer partitions than its
                       readers may scale to, or other partitions than the services create
  cnpg-databases       the CloudNativePG Cluster lacks a role and a Database per service, or a
                       service reads another's database
  connections          the pods at their most (the autoscalers' maxima) may open more database
                       connections than the chart's PostgreSQL takes
  config               the services' settings file is missing a service or does not parse
  profile              what the values set implies is not what was rendered (operators'
                       objects with external engines, or none where the chart makes them)

--self-test breaks the default rendering in memory, one rule at a time, and fails unless each
break is caught by its rule (and the unbroken rendering passes).

Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tomllib
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

GATEWAY = "gateway"
WORKERS = ("inventory", "notifications", "payments", "status")
SERVICES = ("gateway", "api", "registry") + WORKERS
# The binary that migrates each database-owning service (status uses the order API's tables).
MIGRATORS = {
    "registry": "oms-registry",
    "api": "oms-api",
    "inventory": "oms-inventory",
    "payments": "oms-payments",
    "notifications": "oms-notifications",
    "gateway": "oms-gateway",
}
# The database each service uses: one per service, the status worker sharing the order API's.
DATABASE_OF = {
    "gateway": "oms_gateway",
    "api": "oms_orders",
    "status": "oms_orders",
    "registry": "oms_registry",
    "inventory": "oms_inventory",
    "notifications": "oms_notifications",
    "payments": "oms_payments",
}
# The services' settings that say how many partitions each topic is created with.
PARTITION_SETTINGS = {
    "orders": ("api", "topics.partitions"),
    "inventory": ("inventory", "partitions"),
    "payments": ("payments", "partitions"),
    "notifications": ("notifications", "partitions"),
}
# Who may connect to each service (its pods' in-namespace callers), and the gateway is open.
CALLERS = {
    "api": {"gateway"},
    "inventory": {"gateway", "api"},
    "notifications": {"gateway"},
    "payments": {"gateway"},
    "registry": set(SERVICES),
    "status": set(),
    "redis": {"api", "status"},
}
HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"
HOOK_DELETE = "helm.sh/hook-delete-policy"
COMPONENT = "app.kubernetes.io/component"

# Settings that are secrets, by name: in a TOML path, or an environment variable's name.
SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|signing[_-]?key|credential|"
    r"(^|[._])pem$|password_hash)",
    re.IGNORECASE,
)
# The settings the code wraps in `Secret` although their names say nothing.
SECRET_SETTINGS = re.compile(
    r"(^|[._])(database[._]url|cache[._]url|nats[._]url|users)$", re.IGNORECASE
)
# Values that are secrets whatever their name.
SECRET_VALUES = [
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*:[^@\s/\"']+@"), "a URL with a password"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]+"), "a Stripe secret key"),
    (re.compile(r"\bwhsec_[A-Za-z0-9]+"), "a Stripe webhook secret"),
    (re.compile(r"\$argon2(id|i|d)\$"), "a password hash"),
]


@dataclass(frozen=True)
class Violation:
    rule: str
    obj: str
    why: str

    def __str__(self) -> str:
        return f"{self.rule} {self.obj}: {self.why}"


def ident(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def annotations(doc: dict) -> dict:
    return doc.get("metadata", {}).get("annotations") or {}


def labels(doc: dict) -> dict:
    return doc.get("metadata", {}).get("labels") or {}


def hooks(doc: dict) -> set[str]:
    return {h.strip() for h in str(annotations(doc).get(HOOK, "")).split(",") if h.strip()}


def selects(selector: dict | None, pod_labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects these labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if pod_labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in pod_labels
        if op == "In" and not (present and pod_labels[key] in values):
            return False
        if op == "NotIn" and present and pod_labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def walk(value, path=""):
    """(path, leaf) for every leaf of a parsed TOML document."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from walk(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from walk(inner, f"{path}[{index}]")
    else:
        yield path, value


def secret_value(text: str) -> str | None:
    for pattern, what in SECRET_VALUES:
        if pattern.search(text):
            return what
    return None


def secret_name(name: str) -> bool:
    bare = re.sub(r"\[\d+\]", "", name)
    return bool(SECRET_NAME.search(bare) or SECRET_SETTINGS.search(bare))


def env_secret_name(name: str) -> bool:
    """An OMS_<SERVICE>__A__B variable's name as its setting path: OMS_API__DATABASE__URL -> database.url."""
    setting = re.sub(r"^OMS_[A-Z]+__", "", name).replace("__", ".").lower()
    return secret_name(setting) or secret_name(name.lower())


def get_path(table: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(table, dict) or part not in table:
            return None
        table = table[part]
    return table


class Rendering:
    """The rendered objects, indexed for the rules."""

    def __init__(self, docs: list[dict]):
        self.docs = [d for d in docs if isinstance(d, dict) and d.get("kind")]
        self.violations: list[Violation] = []

    def fail(self, rule: str, obj: str, why: str) -> None:
        self.violations.append(Violation(rule, obj, why))

    def kind(self, *kinds: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] in kinds]

    def named(self, kind: str, name: str) -> dict | None:
        for doc in self.kind(kind):
            if doc["metadata"].get("name") == name:
                return doc
        return None

    def deployments(self) -> dict[str, dict]:
        """The Deployments by component (app.kubernetes.io/component, or their name)."""
        return {labels(d).get(COMPONENT, d["metadata"]["name"]): d for d in self.kind("Deployment")}

    def config(self) -> dict:
        """The services' settings: the parsed oms.toml of the ConfigMap that holds it."""
        for doc in self.kind("ConfigMap"):
            text = (doc.get("data") or {}).get("oms.toml")
            if text is not None:
                try:
                    return tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    self.fail("config", ident(doc), f"oms.toml does not parse: {e}")
                    return {}
        self.fail("config", "ConfigMap/*", "no ConfigMap holds the services' oms.toml")
        return {}

    def secret_value_of(self, name: str, key: str) -> str | None:
        doc = self.named("Secret", name)
        if doc is None:
            return None
        if key in (doc.get("stringData") or {}):
            return str(doc["stringData"][key])
        return None


def containers(doc: dict, init: bool = True) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    found = list(spec.get("containers") or [])
    if init:
        found += list(spec.get("initContainers") or [])
    return found


def pod_labels(doc: dict) -> dict:
    return doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}


def env_ref(container: dict, suffix: str) -> tuple[str, str] | None:
    """The (Secret, key) an environment variable ending in `suffix` comes from."""
    for env in container.get("env") or []:
        if env.get("name", "").endswith(suffix):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref:
                return ref.get("name"), ref.get("key")
    return None


# --- the rules -----------------------------------------------------------------------------


def check_configmaps(r: Rendering) -> None:
    for doc in r.kind("ConfigMap"):
        for key, text in (doc.get("data") or {}).items():
            text = str(text)
            if key.endswith(".toml"):
                try:
                    parsed = tomllib.loads(text)
                except tomllib.TOMLDecodeError:
                    continue  # reported by the config rule
                for path, value in walk(parsed):
                    if secret_name(path):
                        r.fail("secret-in-configmap", ident(doc), f"{key}: the setting {path} is a secret")
                    elif isinstance(value, str) and (what := secret_value(value)):
                        r.fail("secret-in-configmap", ident(doc), f"{key}: {path} holds {what}")
            else:
                if secret_name(key) or (key.startswith("OMS_") and env_secret_name(key)):
                    r.fail("secret-in-configmap", ident(doc), f"the key {key} is a secret setting")
                if what := secret_value(text):
                    r.fail("secret-in-configmap", ident(doc), f"{key} holds {what}")


def check_env(r: Rendering) -> None:
    for doc in r.kind("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for container in containers(doc):
            for env in container.get("env") or []:
                name, value = env.get("name", ""), env.get("value")
                if value is None:
                    continue
                if env_secret_name(name) or secret_value(str(value)):
                    r.fail("secret-literal-env", ident(doc),
                           f"container {container.get('name')}: {name} is a secret given as a literal value, not from a Secret")


def check_probes_and_resources(r: Rendering) -> None:
    for component, doc in r.deployments().items():
        for container in containers(doc, init=False):
            where = f"container {container.get('name')}"
            for probe in ("readinessProbe", "livenessProbe"):
                if not container.get(probe):
                    r.fail("probes", ident(doc), f"{where} has no {probe}")
            if component in SERVICES:
                for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
                    got = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
                    if container.get(probe) and got != path:
                        r.fail("probes", ident(doc), f"{where}: its {probe} asks {got}, not {path}")
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
            missing += [] if "memory" in limits else ["limits.memory"]
            if missing:
                r.fail("resources", ident(doc), f"{where} has no {', '.join(missing)}")


def check_migrations(r: Rendering) -> None:
    # Nothing that runs as a service's pod migrates.
    for doc in r.kind("Deployment", "StatefulSet", "DaemonSet"):
        for container in containers(doc):
            words = " ".join(str(w) for w in (container.get("command") or []) + (container.get("args") or []))
            if re.search(r"\bmigrate\b", words):
                r.fail("migrate-at-start", ident(doc),
                       f"container {container.get('name')} runs `{words}`: migrations are hook Jobs, never a pod's start")
    jobs = r.kind("Job")
    for component, binary in MIGRATORS.items():
        found = []
        for job in jobs:
            for container in containers(job):
                words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
                if binary in " ".join(words) and "migrate" in words:
                    found.append(job)
        if not found:
            r.fail("migration-hook", "Job/*", f"no Job runs `{binary} migrate`")
        for job in found:
            if not {"pre-install", "pre-upgrade"} <= hooks(job):
                r.fail("migration-hook", ident(job),
                       f"runs `{binary} migrate` but is not a pre-install,pre-upgrade hook ({HOOK}: {annotations(job).get(HOOK)!r})")
            if "backoffLimit" not in job.get("spec", {}):
                r.fail("migration-hook", ident(job), "has no backoffLimit: a failing migration must end, and fail the release")
            check_hook_needs(r, job)


def weight(doc: dict) -> int:
    try:
        return int(annotations(doc).get(HOOK_WEIGHT, "0"))
    except ValueError:
        return 0


def check_hook_needs(r: Rendering, job: dict) -> None:
    """A pre-install hook runs before the release's ordinary objects exist: it may only need
    objects made outside the release, or hooks that Helm makes before it."""
    spec = job["spec"]["template"]["spec"]
    needs: list[tuple[str, str]] = []
    if spec.get("serviceAccountName"):
        needs.append(("ServiceAccount", spec["serviceAccountName"]))
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            needs.append(("ConfigMap", volume["configMap"].get("name")))
        if "secret" in volume:
            needs.append(("Secret", volume["secret"].get("secretName")))
    for container in containers(job):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if "secretKeyRef" in source:
                needs.append(("Secret", source["secretKeyRef"].get("name")))
            if "configMapKeyRef" in source:
                needs.append(("ConfigMap", source["configMapKeyRef"].get("name")))
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                needs.append(("Secret", source["secretRef"].get("name")))
            if "configMapRef" in source:
                needs.append(("ConfigMap", source["configMapRef"].get("name")))
    for kind, name in needs:
        doc = r.named(kind, name)
        if doc is None:
            continue  # made outside the release
        if "pre-install" not in hooks(doc) or weight(doc) >= weight(job):
            r.fail("migration-order", ident(job),
                   f"needs {kind}/{name}, which Helm makes only after this pre-install hook on a first install")


def check_database_hooks(r: Rendering) -> None:
    """The database objects the migrations need on a first install are pre-install hooks made
    before them, and Helm never deletes one to make it again (that would lose the data)."""
    migrations = [j for j in r.kind("Job") if "pre-install" in hooks(j)]
    first = min((weight(j) for j in migrations), default=0)
    for doc in r.kind("Cluster", "Database"):
        if "pre-install" not in hooks(doc) or weight(doc) >= first:
            r.fail("migration-order", ident(doc),
                   "must be a pre-install hook weighted before the migrations: they need the database on a first install")
        policy = str(annotations(doc).get(HOOK_DELETE, "before-hook-creation"))
        if "before-hook-creation" in policy or "hook-succeeded" in policy:
            r.fail("migration-order", ident(doc),
                   f"{HOOK_DELETE} {policy!r} lets Helm delete the database's object and make it again")


def check_exposure(r: Rendering) -> None:
    deployments = r.deployments()
    gateway_labels = pod_labels(deployments[GATEWAY]) if GATEWAY in deployments else {}
    gateway_services = set()
    for svc in r.kind("Service"):
        spec = svc.get("spec") or {}
        is_gateway = bool(gateway_labels) and spec.get("selector") and selects(
            {"matchLabels": spec["selector"]}, gateway_labels)
        if is_gateway:
            gateway_services.add(svc["metadata"]["name"])
            continue
        if spec.get("type") in ("LoadBalancer", "NodePort") or spec.get("externalIPs"):
            r.fail("exposure", ident(svc), f"is a {spec.get('type')} Service: only the gateway is reachable from outside")
    for ingress in r.kind("Ingress"):
        spec = ingress.get("spec") or {}
        backends = [spec.get("defaultBackend")] if spec.get("defaultBackend") else []
        for rule in spec.get("rules") or []:
            backends += [p.get("backend") for p in (rule.get("http") or {}).get("paths") or []]
        for backend in backends:
            name = ((backend or {}).get("service") or {}).get("name")
            if name not in gateway_services:
                r.fail("exposure", ident(ingress), f"leads to {name}: only the gateway is reachable from outside")


def check_pdbs(r: Rendering) -> None:
    pdbs = r.kind("PodDisruptionBudget")
    for doc in r.kind("Deployment"):
        if not any(selects(p["spec"].get("selector"), pod_labels(doc)) for p in pdbs):
            r.fail("pdb", ident(doc), "no PodDisruptionBudget selects its pods")


def open_peer(peer: dict) -> bool:
    if not peer:
        return True
    if "ipBlock" in peer:
        return peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0")
    if "namespaceSelector" in peer and not peer["namespaceSelector"] and "podSelector" not in peer:
        return True
    return False


def check_network_policies(r: Rendering) -> None:
    policies = [p for p in r.kind("NetworkPolicy")
                if "Ingress" in ((p.get("spec") or {}).get("policyTypes") or ["Ingress"])]
    deployments = r.deployments()
    for component, doc in deployments.items():
        if component == GATEWAY:
            continue
        mine = [p for p in policies if selects(p["spec"].get("podSelector"), pod_labels(doc))]
        if not mine:
            r.fail("networkpolicy", ident(doc), "no NetworkPolicy restricts who reaches its pods")
            continue
        for policy in mine:
            for rule in policy["spec"].get("ingress") or []:
                peers = rule.get("from") or []
                if not peers or any(open_peer(p) for p in peers):
                    r.fail("networkpolicy", ident(policy), f"lets anyone reach {component}")
                    continue
                # In-namespace pods let in must be the component's callers.
                for peer in peers:
                    if "namespaceSelector" in peer or "podSelector" not in peer:
                        continue
                    for other, other_doc in deployments.items():
                        if selects(peer["podSelector"], pod_labels(other_doc)) and other not in CALLERS.get(component, set()):
                            r.fail("networkpolicy", ident(policy), f"lets {other} reach {component}, which it does not call")


def worker_topics(config: dict, worker: str) -> tuple[str | None, list[str]]:
    consumer = get_path(config, f"{worker}.consumer") or {}
    return consumer.get("group"), list(consumer.get("topics") or [])


def lanes_of(config: dict, worker: str) -> int | None:
    """The members of its group each replica of `worker` runs, as its settings write them out."""
    lanes = get_path(config, f"{worker}.consumer.lanes")
    return lanes if isinstance(lanes, int) and not isinstance(lanes, bool) and lanes >= 1 else None


def partitions_of(r: Rendering, config: dict, topic: str) -> int | None:
    """A topic's partitions: its KafkaTopic's, or else what the services create it with."""
    for doc in r.kind("KafkaTopic"):
        spec = doc.get("spec") or {}
        if spec.get("topicName", doc["metadata"]["name"]) == topic:
            return spec.get("partitions")
    section, setting = PARTITION_SETTINGS.get(topic, (None, None))
    return get_path(config, f"{section}.{setting}") if section else None


def check_scaling(r: Rendering, config: dict) -> None:
    deployments = r.deployments()
    scaled = {}
    for so in r.kind("ScaledObject"):
        target = (so["spec"].get("scaleTargetRef") or {}).get("name")
        scaled[target] = so
    hpas = {(h["spec"].get("scaleTargetRef") or {}).get("name"): h for h in r.kind("HorizontalPodAutoscaler")}
    bus = get_path(config, "api.bus.kind") or "kafka"
    worker_docs = {w: deployments[w] for w in WORKERS if w in deployments}
    with_so = [w for w, d in worker_docs.items() if d["metadata"]["name"] in scaled]
    for worker, doc in worker_docs.items():
        so = scaled.get(doc["metadata"]["name"])
        if so is None:
            # On NATS, KEDA's scaler needs the servers' monitoring endpoint: all or none.
            if bus == "kafka" or with_so:
                r.fail("worker-scaledobject", ident(doc), f"no ScaledObject scales {worker} on its consumer group's lag")
            continue
        if "replicas" in doc["spec"]:
            r.fail("autoscaled-replicas", ident(doc), "sets replicas, which its ScaledObject owns")
        group, topics = worker_topics(config, worker)
        if not group or not topics:
            r.fail("config", ident(doc), f"[{worker}] names no consumer.group and consumer.topics")
            continue
        spec = so["spec"]
        high, low = spec.get("maxReplicaCount", 100), spec.get("minReplicaCount", 0)
        if low < 1:
            r.fail("worker-scaledobject", ident(so), "minReplicaCount is below 1: a worker also relays its outbox and serves HTTP")
        triggers = spec.get("triggers") or []
        if bus == "kafka":
            got = {((t.get("metadata") or {}).get("consumerGroup"), (t.get("metadata") or {}).get("topic"))
                   for t in triggers if t.get("type") == "kafka"}
            want = {(group, t) for t in topics}
            if got != want:
                r.fail("worker-scaledobject", ident(so),
                       f"its Kafka triggers are {sorted(got)}, not the group {group} on {topics}")
            brokers = get_path(config, f"{worker}.bus.kafka.brokers")
            for t in triggers:
                if (t.get("metadata") or {}).get("bootstrapServers") != brokers:
                    r.fail("worker-scaledobject", ident(so), f"a trigger reads another Kafka than the worker's ({brokers})")
        else:
            want = set()
            for topic in topics:
                for p in range(int(partitions_of(r, config, topic) or 0)):
                    want.add((topic.replace(".", "_"), f"{group}-p{p}"))
            got = {((t.get("metadata") or {}).get("stream"), (t.get("metadata") or {}).get("consumer"))
                   for t in triggers if t.get("type") == "nats-jetstream"}
            if got != want:
                r.fail("worker-scaledobject", ident(so),
                       f"its NATS JetStream triggers miss or add consumers: want {len(want)} (each partition's {group}-p<n>), got {len(got)}")
        lanes = lanes_of(config, worker)
        if lanes is None:
            r.fail("partitions", ident(so), f"{worker}'s consumer.lanes is not written out as a count")
            lanes = 1
        for topic in topics:
            partitions = partitions_of(r, config, topic)
            if partitions is None:
                r.fail("partitions", ident(so), f"{worker} reads {topic}, whose partition count is nowhere")
            elif high * lanes > partitions:
                r.fail("partitions", ident(so),
                       f"maxReplicaCount {high} × {lanes} lanes exceeds the {partitions} partitions of {topic}: the members beyond them would sit idle")
    for component in ("gateway", "api"):
        doc = deployments.get(component)
        if doc is None:
            continue
        hpa = hpas.get(doc["metadata"]["name"])
        if hpa is None:
            r.fail("hpa", ident(doc), "no HorizontalPodAutoscaler scales it")
            continue
        if not any(((m.get("resource") or {}).get("name") == "cpu") for m in hpa["spec"].get("metrics") or []):
            r.fail("hpa", ident(hpa), "does not scale on CPU")
        if "replicas" in doc["spec"]:
            r.fail("autoscaled-replicas", ident(doc), "sets replicas, which its HPA owns")


def as_int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def check_kafka(r: Rendering, config: dict, profile: str) -> None:
    kafkas = r.kind("Kafka")
    if profile == "default" and not kafkas:
        r.fail("profile", "Kafka/*", "the default values make a Strimzi Kafka, and none was rendered")
    for kafka in kafkas:
        name = kafka["metadata"]["name"]
        notes = annotations(kafka)
        if notes.get("strimzi.io/kraft") != "enabled" or notes.get("strimzi.io/node-pools") != "enabled":
            r.fail("kafka-cluster", ident(kafka), "is not KRaft on node pools (strimzi.io/kraft and strimzi.io/node-pools: enabled)")
        spec = kafka.get("spec") or {}
        if "zookeeper" in spec:
            r.fail("kafka-cluster", ident(kafka), "has a ZooKeeper")
        pools = [p for p in r.kind("KafkaNodePool") if labels(p).get("strimzi.io/cluster") == name]
        brokers = sum(as_int(p["spec"].get("replicas")) for p in pools if "broker" in (p["spec"].get("roles") or []))
        controllers = sum(as_int(p["spec"].get("replicas")) for p in pools if "controller" in (p["spec"].get("roles") or []))
        if brokers < 3:
            r.fail("kafka-cluster", ident(kafka), f"has {brokers} brokers, not 3")
        if controllers < 3 or controllers % 2 == 0:
            r.fail("kafka-cluster", ident(kafka), f"has {controllers} KRaft controllers: three (an odd number) keep a quorum through one loss")
        settings = (spec.get("kafka") or {}).get("config") or {}
        for key, least in (("default.replication.factor", 3), ("offsets.topic.replication.factor", 3),
                           ("transaction.state.log.replication.factor", 3), ("min.insync.replicas", 2),
                           ("transaction.state.log.min.isr", 2)):
            if as_int(settings.get(key)) < least:
                r.fail("kafka-cluster", ident(kafka), f"{key} is {settings.get(key)}, below {least}")
        rf = as_int(settings.get("default.replication.factor"))
        if as_int(settings.get("min.insync.replicas")) >= rf:
            r.fail("kafka-cluster", ident(kafka), "min.insync.replicas leaves no broker to lose")
        if "topicOperator" not in (spec.get("entityOperator") or {}):
            r.fail("kafka-cluster", ident(kafka), "has no topic operator to apply the KafkaTopics")
        bootstrap = f"{name}-kafka-bootstrap"
        for section, table in config.items():
            kafka_settings = get_path(table, "bus.kafka") if isinstance(table, dict) else None
            if not kafka_settings:
                continue
            if bootstrap not in str(kafka_settings.get("brokers", "")):
                r.fail("kafka-cluster", f"ConfigMap/[{section}]", f"its brokers are not {bootstrap}")
            if as_int(kafka_settings.get("replication_factor")) != rf:
                r.fail("kafka-cluster", f"ConfigMap/[{section}]",
                       f"creates topics with replication_factor {kafka_settings.get('replication_factor')}, not the cluster's {rf}")
        # The topics: each one the services use has a KafkaTopic with the partitions the groups need.
        topics = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in r.kind("KafkaTopic")
                  if labels(d).get("strimzi.io/cluster") == name}
        needed: dict[str, int] = {}
        for so in r.kind("ScaledObject"):
            worker = next((w for w, d in r.deployments().items()
                           if d["metadata"]["name"] == (so["spec"].get("scaleTargetRef") or {}).get("name")), None)
            if worker:
                for topic in worker_topics(config, worker)[1]:
                    members = as_int(so["spec"].get("maxReplicaCount", 100)) * (lanes_of(config, worker) or 1)
                    needed[topic] = max(needed.get(topic, 0), members)
        for topic, (section, setting) in PARTITION_SETTINGS.items():
            doc = topics.get(topic)
            if doc is None:
                r.fail("kafka-topics", f"KafkaTopic/{topic}", "is missing")
                continue
            partitions = as_int(doc["spec"].get("partitions"))
            if partitions < needed.get(topic, 1):
                r.fail("kafka-topics", ident(doc),
                       f"has {partitions} partitions, fewer than the {needed[topic]} members its groups may scale to")
            created = get_path(config, f"{section}.{setting}")
            if created is not None and as_int(created) != partitions:
                r.fail("kafka-topics", ident(doc), f"has {partitions} partitions, the services create it with {created}")
            if as_int(doc["spec"].get("replicas")) < 3:
                r.fail("kafka-topics", ident(doc), f"has {doc['spec'].get('replicas')} replicas, not 3")
            isr = (doc["spec"].get("config") or {}).get("min.insync.replicas")
            if isr is not None and as_int(isr) < 2:
                r.fail("kafka-topics", ident(doc), f"min.insync.replicas {isr}, below 2")


def check_databases(r: Rendering, profile: str) -> None:
    clusters = r.kind("Cluster")
    if profile == "default" and not clusters:
        r.fail("profile", "Cluster/*", "the default values make a CloudNativePG Cluster, and none was rendered")
    for cluster in clusters:
        name = cluster["metadata"]["name"]
        roles = {role.get("name"): role for role in ((cluster.get("spec") or {}).get("managed") or {}).get("roles") or []}
        databases = {d["spec"].get("name"): d for d in r.kind("Database")
                     if ((d["spec"].get("cluster") or {}).get("name")) == name}
        for db in sorted(set(DATABASE_OF.values())):
            doc = databases.get(db)
            if doc is None:
                r.fail("cnpg-databases", ident(cluster), f"has no Database {db}: one database per service")
                continue
            owner = doc["spec"].get("owner")
            role = roles.get(owner)
            if role is None or not role.get("login"):
                r.fail("cnpg-databases", ident(doc), f"its owner {owner} is not a login role of {name}")
            elif not r.named("Secret", (role.get("passwordSecret") or {}).get("name")):
                r.fail("cnpg-databases", ident(cluster), f"the role {owner} has no password Secret in the release")
        owners = [d["spec"].get("owner") for d in databases.values()]
        if len(set(owners)) != len(owners):
            r.fail("cnpg-databases", ident(cluster), "two databases share an owner: a service could read another's")
    # Each service reads its own database (the status worker the order API's).
    external = not clusters
    for component, doc in r.deployments().items():
        if component not in DATABASE_OF:
            continue
        container = containers(doc, init=False)[0]
        ref = env_ref(container, "__DATABASE__URL")
        if ref is None:
            r.fail("cnpg-databases", ident(doc), "gets no database URL from a Secret")
            continue
        url = r.secret_value_of(*ref)
        if url is not None:
            db = urlsplit(url).path.lstrip("/")
            if db != DATABASE_OF[component]:
                r.fail("cnpg-databases", ident(doc), f"reads the database {db}, not {DATABASE_OF[component]}")
        elif not external:
            r.fail("cnpg-databases", ident(doc), f"reads its database URL from {ref[0]}, which the release does not make")
        elif ref[1] != DATABASE_OF[component].removeprefix("oms_"):
            r.fail("cnpg-databases", ident(doc), f"reads the key {ref[1]} of {ref[0]}, not {DATABASE_OF[component].removeprefix('oms_')}")


def most_pods(r: Rendering, doc: dict) -> int:
    """The most pods a Deployment runs: its autoscaler's maximum, or its replicas."""
    name = doc["metadata"]["name"]
    for hpa in r.kind("HorizontalPodAutoscaler"):
        if (hpa["spec"].get("scaleTargetRef") or {}).get("name") == name:
            return as_int(hpa["spec"].get("maxReplicas"))
    for so in r.kind("ScaledObject"):
        if (so["spec"].get("scaleTargetRef") or {}).get("name") == name:
            return as_int(so["spec"].get("maxReplicaCount", 100))
    return as_int(doc["spec"].get("replicas", 1))


def check_connections(r: Rendering, config: dict) -> None:
    for cluster in r.kind("Cluster"):
        parameters = ((cluster.get("spec") or {}).get("postgresql") or {}).get("parameters") or {}
        limit = as_int(parameters.get("max_connections", 100))
        total, parts = 0, []
        for component, doc in r.deployments().items():
            if component not in DATABASE_OF:
                continue
            pods, pool = most_pods(r, doc), as_int(get_path(config, f"{component}.database.max_connections") or 16)
            total += pods * pool
            parts.append(f"{component} {pods}x{pool}")
        # PostgreSQL keeps superuser_reserved_connections (3) for itself, and CloudNativePG
        # connects too: leave ten.
        if total > limit - 10:
            r.fail("connections", ident(cluster),
                   f"the pods at their most may open {total} connections ({', '.join(parts)}), "
                   f"and max_connections is {limit}: lower postgresql.poolSize or the maxima, or raise it")


def check_config(r: Rendering, config: dict, profile: str) -> None:
    for component in SERVICES:
        if component not in config:
            r.fail("config", "ConfigMap/oms.toml", f"has no [{component}] section")
    deployments = r.deployments()
    for component, doc in deployments.items():
        if component not in SERVICES:
            continue
        listen = str(get_path(config, f"{component}.listen") or "")
        container = containers(doc, init=False)[0]
        ports = {p.get("containerPort") for p in container.get("ports") or []}
        if not listen.rsplit(":", 1)[-1].isdigit() or int(listen.rsplit(":", 1)[-1]) not in ports:
            r.fail("config", ident(doc), f"listens on {listen!r}, not on its container port {sorted(ports)}")
    kinds = {d["kind"] for d in r.docs}
    api_versions = {str(d.get("apiVersion", "")).split("/")[0] for d in r.docs}
    operators = sorted(v for v in api_versions if v in ("kafka.strimzi.io", "postgresql.cnpg.io"))
    if profile == "external" and operators:
        r.fail("profile", "*", f"external engines, yet objects of {', '.join(operators)} were rendered")
    if profile == "nats":
        if "kafka.strimzi.io" in api_versions:
            r.fail("profile", "*", "on NATS, yet Strimzi objects were rendered")
        if get_path(config, "api.bus.kind") != "nats":
            r.fail("profile", "ConfigMap/oms.toml", "the NATS values did not set bus.kind = nats")
    if profile == "default" and "ServiceMonitor" not in kinds:
        r.fail("profile", "ServiceMonitor/*", "rendered with the Prometheus Operator's API, yet no ServiceMonitor")


def check(docs: list[dict], profile: str = "default") -> list[Violation]:
    r = Rendering(docs)
    config = r.config()
    check_config(r, config, profile)
    check_configmaps(r)
    check_env(r)
    check_probes_and_resources(r)
    check_migrations(r)
    check_database_hooks(r)
    check_exposure(r)
    check_pdbs(r)
    check_network_policies(r)
    check_scaling(r, config)
    check_kafka(r, config, profile)
    check_databases(r, profile)
    check_connections(r, config)
    return r.violations


# --- the self-test: break the default rendering, one rule at a time ------------------------


def find(docs, kind, component=None, name=None):
    for doc in docs:
        if doc.get("kind") != kind:
            continue
        if component and labels(doc).get(COMPONENT) != component:
            continue
        if name and doc["metadata"]["name"] != name:
            continue
        return doc
    raise LookupError(f"no {kind} {component or name} in the rendering")


def config_map(docs) -> dict:
    return next(d for d in docs if d.get("kind") == "ConfigMap" and "oms.toml" in (d.get("data") or {}))


def container_of(docs, component) -> dict:
    return containers(find(docs, "Deployment", component), init=False)[0]


def remove(docs, doc) -> None:
    docs.remove(doc)


def mutations():
    """(what, the rule that must catch it, how) for each break."""
    def toml_append(docs, section, line):
        cm = config_map(docs)
        cm["data"]["oms.toml"] = cm["data"]["oms.toml"].replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)

    def inline_pem(docs):
        cm = config_map(docs)
        text = cm["data"]["oms.toml"]
        inline = 'pem = "-----BEGIN PRIVATE KEY-----\\nMC4CAQA=\\n-----END PRIVATE KEY-----\\n"'
        cm["data"]["oms.toml"] = re.sub(r'pem_file = "[^"]*"', lambda _: inline, text, count=1)
        assert cm["data"]["oms.toml"] != text, "no pem_file to replace"

    def raw_secret(docs):
        config_map(docs)["data"]["OMS_PAYMENTS__STRIPE__SECRET_KEY"] = "sk_live_abc123"

    def env_literal(docs):
        container = container_of(docs, "payments")
        container["env"].append({"name": "OMS_PAYMENTS__STRIPE__SECRET_KEY", "value": "sk_test_abc123"})

    def drop_probe(probe):
        return lambda docs: container_of(docs, "api").pop(probe)

    def drop_resources(docs):
        container_of(docs, "inventory")["resources"].pop("requests")

    def drop_scaledobject(docs):
        remove(docs, find(docs, "ScaledObject", "payments"))

    def too_many_replicas(docs):
        find(docs, "ScaledObject", "notifications")["spec"]["maxReplicaCount"] = 12

    def more_lanes(docs):
        cm = config_map(docs)
        text = cm["data"]["oms.toml"]
        section = text.index("[payments]\n")
        at = text.index("consumer.lanes = ", section)
        end = text.index("\n", at)
        cm["data"]["oms.toml"] = text[:at] + "consumer.lanes = 4" + text[end:]

    def wrong_group(docs):
        find(docs, "ScaledObject", "status")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "status"

    def migrate_in_command(docs):
        container_of(docs, "api")["command"] = ["sh", "-c", "oms-api migrate && exec oms-api"]

    def migrate_in_args(docs):
        container_of(docs, "gateway")["args"] = ["migrate"]

    def migrate_init(docs):
        spec = find(docs, "Deployment", "inventory")["spec"]["template"]["spec"]
        spec["initContainers"] = [{"name": "migrate", "image": "oms", "command": ["oms-inventory", "migrate"]}]

    def job_not_hook(docs):
        find(docs, "Job", "migrate-payments")["metadata"]["annotations"].pop(HOOK)

    def job_post_install(docs):
        find(docs, "Job", "migrate-registry")["metadata"]["annotations"][HOOK] = "post-install,pre-upgrade"

    def drop_job(docs):
        remove(docs, find(docs, "Job", "migrate-notifications"))

    def job_needs_configmap(docs):
        spec = find(docs, "Job", "migrate-api")["spec"]["template"]["spec"]
        spec["volumes"] = [{"name": "config", "configMap": {"name": config_map(docs)["metadata"]["name"]}}]

    def cluster_not_hook(docs):
        find(docs, "Cluster")["metadata"]["annotations"].pop(HOOK)

    def cluster_recreated(docs):
        find(docs, "Cluster")["metadata"]["annotations"][HOOK_DELETE] = "before-hook-creation"

    def api_load_balancer(docs):
        find(docs, "Service", "api")["spec"]["type"] = "LoadBalancer"

    def registry_node_port(docs):
        find(docs, "Service", "registry")["spec"]["type"] = "NodePort"

    def ingress_to_api(docs):
        api = find(docs, "Service", "api")["metadata"]["name"]
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "oms-api"},
                     "spec": {"rules": [{"host": "x", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                              "backend": {"service": {"name": api, "port": {"number": 8082}}}}]}}]}})

    def drop_pdb(docs):
        remove(docs, find(docs, "PodDisruptionBudget", "status"))

    def drop_policy(docs):
        remove(docs, find(docs, "NetworkPolicy", "inventory"))

    def open_policy(docs):
        find(docs, "NetworkPolicy", "api")["spec"]["ingress"].append({"ports": [{"port": "http"}]})

    def wider_callers(docs):
        rule = find(docs, "NetworkPolicy", "api")["spec"]["ingress"][0]
        rule["from"][0]["podSelector"]["matchExpressions"][0]["values"].append("status")

    def no_kraft(docs):
        find(docs, "Kafka")["metadata"]["annotations"].pop("strimzi.io/kraft")

    def one_broker(docs):
        find(docs, "KafkaNodePool")["spec"]["replicas"] = 1

    def low_isr(docs):
        find(docs, "Kafka")["spec"]["kafka"]["config"]["min.insync.replicas"] = 1

    def low_rf(docs):
        find(docs, "Kafka")["spec"]["kafka"]["config"]["default.replication.factor"] = 1

    def few_partitions(docs):
        topic = next(d for d in docs if d.get("kind") == "KafkaTopic" and d["spec"].get("topicName") == "orders")
        topic["spec"]["partitions"] = 3

    def drop_topic(docs):
        remove(docs, next(d for d in docs if d.get("kind") == "KafkaTopic" and d["spec"].get("topicName") == "payments"))

    def drop_database(docs):
        remove(docs, next(d for d in docs if d.get("kind") == "Database" and d["spec"].get("name") == "oms_payments"))

    def shared_database(docs):
        container = container_of(docs, "inventory")
        for env in container["env"]:
            if env["name"].endswith("__DATABASE__URL"):
                env["valueFrom"]["secretKeyRef"]["name"] = env["valueFrom"]["secretKeyRef"]["name"].replace("inventory", "orders")

    def drop_hpa(docs):
        remove(docs, find(docs, "HorizontalPodAutoscaler", "gateway"))

    def replicas_under_keda(docs):
        find(docs, "Deployment", "inventory")["spec"]["replicas"] = 2

    def many_api_pods(docs):
        find(docs, "HorizontalPodAutoscaler", "api")["spec"]["maxReplicas"] = 60

    def drop_section(docs):
        cm = config_map(docs)
        cm["data"]["oms.toml"] = cm["data"]["oms.toml"].replace("[registry]", "[registri]")

    return [
        ("a database URL with its password in the settings file", "secret-in-configmap",
         lambda d: toml_append(d, "api", 'database.url = "postgres://oms_orders:hunter2@db:5432/oms_orders"')),
        ("Stripe's key in the settings file", "secret-in-configmap",
         lambda d: toml_append(d, "payments", 'stripe.secret_key = "sk_test_abc"')),
        ("a webhook secret in the settings file", "secret-in-configmap",
         lambda d: toml_append(d, "payments", 'webhooks.secret = "whsec_abc"')),
        ("a JWT key's PEM in the settings file", "secret-in-configmap", inline_pem),
        ("a secret setting as a ConfigMap key", "secret-in-configmap", raw_secret),
        ("a secret as a literal environment value", "secret-literal-env", env_literal),
        ("the API without a readiness probe", "probes", drop_probe("readinessProbe")),
        ("the API without a liveness probe", "probes", drop_probe("livenessProbe")),
        ("the inventory without resource requests", "resources", drop_resources),
        ("the payments worker without a ScaledObject", "worker-scaledobject", drop_scaledobject),
        ("the status worker scaled on another group", "worker-scaledobject", wrong_group),
        ("the notifications worker scaled past its partitions", "partitions", too_many_replicas),
        ("the payments worker's lanes raised past its partitions", "partitions", more_lanes),
        ("replicas on a Deployment KEDA scales", "autoscaled-replicas", replicas_under_keda),
        ("the gateway without its HPA", "hpa", drop_hpa),
        ("`migrate` in the API's command", "migrate-at-start", migrate_in_command),
        ("`migrate` in the gateway's args", "migrate-at-start", migrate_in_args),
        ("`migrate` in an init container", "migrate-at-start", migrate_init),
        ("the payments migration not a hook", "migration-hook", job_not_hook),
        ("the registry migration after install", "migration-hook", job_post_install),
        ("no migration for the notifications", "migration-hook", drop_job),
        ("a migration that needs the release's ConfigMap", "migration-order", job_needs_configmap),
        ("the database Cluster an ordinary object", "migration-order", cluster_not_hook),
        ("the database Cluster deleted and made again", "migration-order", cluster_recreated),
        ("the API as a LoadBalancer", "exposure", api_load_balancer),
        ("the registry as a NodePort", "exposure", registry_node_port),
        ("an Ingress to the API", "exposure", ingress_to_api),
        ("the status worker without a PodDisruptionBudget", "pdb", drop_pdb),
        ("the inventory without a NetworkPolicy", "networkpolicy", drop_policy),
        ("the API open to anyone", "networkpolicy", open_policy),
        ("the API open to the status worker", "networkpolicy", wider_callers),
        ("Kafka without KRaft", "kafka-cluster", no_kraft),
        ("Kafka with one broker", "kafka-cluster", one_broker),
        ("Kafka with min.insync.replicas 1", "kafka-cluster", low_isr),
        ("Kafka with replication 1", "kafka-cluster", low_rf),
        ("the orders topic with 3 partitions", "kafka-topics", few_partitions),
        ("no KafkaTopic for payments", "kafka-topics", drop_topic),
        ("no database for the payments", "cnpg-databases", drop_database),
        ("the inventory on the orders database", "cnpg-databases", shared_database),
        ("60 API pods at most on the chart's PostgreSQL", "connections", many_api_pods),
        ("the registry's section misnamed", "config", drop_section),
    ]


def self_test(docs: list[dict]) -> int:
    clean = check(copy.deepcopy(docs), "default")
    if clean:
        print("self-test: the unbroken default rendering already fails:", file=sys.stderr)
        for v in clean:
            print(f"  {v}", file=sys.stderr)
        return 1
    missed = 0
    cases = mutations()
    for what, rule, mutate in cases:
        broken = copy.deepcopy(docs)
        mutate(broken)
        found = check(broken, "default")
        if any(v.rule == rule for v in found):
            first = next(v for v in found if v.rule == rule)
            print(f"caught  {what}: {first}")
        else:
            missed += 1
            print(f"MISSED  {what}: no {rule} violation (got: {', '.join(sorted({v.rule for v in found})) or 'none'})")
    print(f"{len(cases) - missed} passed, {missed} failed")
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rendered", help="the output of helm template")
    parser.add_argument("--profile", choices=("default", "external", "nats"), default="default",
                        help="what the values set implies: the operators' engines, external ones, or NATS")
    parser.add_argument("--self-test", action="store_true",
                        help="break the default rendering one rule at a time, and check each is caught")
    args = parser.parse_args()
    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if args.self_test:
        return self_test(docs)
    violations = check(docs, args.profile)
    for v in violations:
        print(v)
    kinds = len({d.get("kind") for d in docs})
    print(f"{len(docs)} objects of {kinds} kinds, {len(violations)} rule(s) broken ({args.profile})")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
