// Validates the chart's KEDA ScaledObjects and Prometheus Operator ServiceMonitors against their
// published schemas (npm's @kubernetes-models), which kubernetes-validate does not have: it only
// warns that it found no schema for a custom resource. (No registry package ships Strimzi's or
// CloudNativePG's schemas: deploy/helm/check.py checks what matters of those objects.)
//
//   ... | node deploy/helm/validate-crs.mjs   (a JSON array of objects on standard input)
//
// The packages are found in $OMS_KUBERNETES_MODELS (scripts/lib.sh installs them there); they
// are loaded by path because an ES module's imports are not looked up beside the caller's
// NODE_PATH.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const models = process.env.OMS_KUBERNETES_MODELS;
if (!models) {
  console.error("OMS_KUBERNETES_MODELS is not set (scripts/lib.sh sets it)");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(models, "node_modules", path)).href);
const { ScaledObject } = await load("@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.mjs");
const { ServiceMonitor } = await load(
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
);
const modelOf = { ScaledObject, ServiceMonitor };

const objects = JSON.parse(readFileSync(0, "utf8"));
let invalid = 0;
for (const object of objects) {
  const Model = modelOf[object.kind];
  if (!Model) continue;
  try {
    new Model(object).validate();
  } catch (error) {
    invalid += 1;
    console.error(`${object.kind}/${object.metadata?.name}: ${error.message}`);
  }
}
const counted = objects.filter((o) => modelOf[o.kind]).length;
console.log(`${counted - invalid} of ${counted} ScaledObjects and ServiceMonitors match their schemas`);
process.exit(invalid ? 1 : 0);
