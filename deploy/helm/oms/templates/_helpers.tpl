{{/*
The chart's names, labels and the table of the OMS services that every template reads.
*/}}

{{- define "oms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, or <release>-oms. */}}
{{- define "oms.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oms.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oms.labels" -}}
helm.sh/chart: {{ include "oms.chart" . }}
{{ include "oms.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oms
{{- end }}

{{- define "oms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "name" "api"). */}}
{{- define "oms.componentLabels" -}}
{{ include "oms.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "oms.componentSelectorLabels" -}}
{{ include "oms.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* A component's object name: <fullname>-<component>. */}}
{{- define "oms.componentName" -}}
{{- printf "%s-%s" (include "oms.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oms.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oms.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oms.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The OMS services, as the code defines them: each one's binary, the port of docker-compose.yml,
its configuration section, the database it uses (status uses the order service's, whose
migrations are the order API's), whether it runs its own migrations, whether it reads the order
cache, and, for the saga workers, the consumer group and the topics it reads (the defaults of
each worker's config.rs) and the partition setting of the topic it writes.
*/}}
{{- define "oms.components" -}}
gateway:
  binary: oms-gateway
  port: 8080
  database: gateway
  migrates: true
api:
  binary: oms-api
  port: 8082
  database: orders
  migrates: true
  cache: true
registry:
  binary: oms-registry
  port: 8081
  database: registry
  migrates: true
inventory:
  binary: oms-inventory
  port: 8083
  database: inventory
  migrates: true
  worker: true
  group: inventory
  reads: [orders]
  writes: inventory
notifications:
  binary: oms-notifications
  port: 8084
  database: notifications
  migrates: true
  worker: true
  group: notifications
  reads: [orders, payments]
  writes: notifications
payments:
  binary: oms-payments
  port: 8086
  database: payments
  migrates: true
  worker: true
  group: payments
  reads: [orders]
  writes: payments
status:
  binary: oms-status
  port: 8085
  database: orders
  migrates: false
  cache: true
  worker: true
  group: order-status
  reads: [inventory, payments]
  writes: orders
{{- end }}

{{/* The databases, one per service: database key -> PostgreSQL database and role name. */}}
{{- define "oms.databases" -}}
orders: oms_orders
inventory: oms_inventory
notifications: oms_notifications
payments: oms_payments
gateway: oms_gateway
registry: oms_registry
{{- end }}

{{/* The topics the services write, in the order the chart renders them. */}}
{{- define "oms.topicNames" -}}
[orders, inventory, payments, notifications]
{{- end }}

{{/* Whether the chart makes the Strimzi Kafka cluster. */}}
{{- define "oms.strimzi" -}}
{{- if and (eq .Values.bus.kind "kafka") (not .Values.bus.kafka.bootstrapServers) }}true{{ end }}
{{- end }}

{{/* The Strimzi Kafka cluster's name. */}}
{{- define "oms.kafkaCluster" -}}
{{- printf "%s-kafka" (include "oms.fullname" .) }}
{{- end }}

{{/* The Kafka bootstrap address the services and KEDA use. */}}
{{- define "oms.kafkaBootstrap" -}}
{{- if .Values.bus.kafka.bootstrapServers }}
{{- .Values.bus.kafka.bootstrapServers }}
{{- else }}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" (include "oms.kafkaCluster" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The CloudNativePG Cluster's name, and the Secret of one database's credentials. */}}
{{- define "oms.pgCluster" -}}
{{- printf "%s-postgres" (include "oms.fullname" .) }}
{{- end }}

{{- define "oms.dbSecretName" -}}
{{- printf "%s-db-%s" (include "oms.fullname" .root) .database }}
{{- end }}

{{/* Where a database's URL is: (dict "root" $ "database" "orders") -> a secretKeyRef. */}}
{{- define "oms.dbSecretRef" -}}
{{- if eq .root.Values.postgresql.mode "external" -}}
name: {{ required "postgresql.external.existingSecret: the Secret with each database's URL" .root.Values.postgresql.external.existingSecret }}
key: {{ .database }}
{{- else -}}
name: {{ include "oms.dbSecretName" . }}
key: url
{{- end }}
{{- end }}

{{/* The chart's own Secret (cache and NATS URLs, the gateway's users). */}}
{{- define "oms.secretName" -}}
{{- include "oms.fullname" . }}
{{- end }}

{{- define "oms.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "oms.fullname" .)) .Values.gateway.jwt.existingSecret }}
{{- end }}

{{/* The largest worker replica count a topic list allows: the smallest of their partitions. */}}
{{- define "oms.partitionBound" -}}
{{- $root := .root }}
{{- $bound := 0 }}
{{- range .topics }}
{{- $p := int (index $root.Values.topics . "partitions") }}
{{- if or (eq $bound 0) (lt $p $bound) }}{{ $bound = $p }}{{ end }}
{{- end }}
{{- $bound }}
{{- end }}

{{/* A worker's lanes: the members of its consumer group each replica runs. */}}
{{- define "oms.lanes" -}}
{{- int (index .root.Values .name "lanes") }}
{{- end }}

{{/* A worker's maxReplicas: its value, bounded by its topics' partitions over its lanes. */}}
{{- define "oms.workerMax" -}}
{{- $values := index .root.Values .name }}
{{- $partitions := int (include "oms.partitionBound" (dict "root" .root "topics" .component.reads)) }}
{{- $lanes := int (include "oms.lanes" .) }}
{{- $bound := div $partitions $lanes }}
{{- if lt $bound 1 }}
{{- fail (printf "%s.lanes (%d) exceeds the partitions of the topics it reads (%d): its lanes beyond them would sit idle" .name $lanes $partitions) }}
{{- end }}
{{- if $values.maxReplicas }}
{{- if gt (int $values.maxReplicas) $bound }}
{{- fail (printf "%s.maxReplicas (%d) × lanes (%d) exceeds the partitions of the topics it reads (%d): the members beyond them would sit idle; raise topics.<topic>.partitions" .name (int $values.maxReplicas) $lanes $partitions) }}
{{- end }}
{{- int $values.maxReplicas }}
{{- else }}
{{- $bound }}
{{- end }}
{{- end }}

{{/* Whether a worker gets a ScaledObject. */}}
{{- define "oms.scaled" -}}
{{- if .Values.keda.enabled }}
{{- if eq .Values.bus.kind "kafka" }}true{{ else if .Values.bus.nats.monitoringEndpoint }}true{{ end }}
{{- end }}
{{- end }}

{{/* The environment every OMS container gets: where the file is, and the secrets. */}}
{{- define "oms.secretEnv" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $section := upper .name }}
- name: OMS_CONFIG
  value: /etc/oms/config/oms.toml
- name: OMS_{{ $section }}__DATABASE__URL
  valueFrom:
    secretKeyRef:
      {{- include "oms.dbSecretRef" (dict "root" $root "database" $c.database) | nindent 6 }}
{{- if $c.cache }}
- name: OMS_{{ $section }}__CACHE__URL
  valueFrom:
    secretKeyRef:
      {{- if $root.Values.cache.redis.enabled }}
      name: {{ include "oms.secretName" $root }}
      key: cache-url
      {{- else }}
      name: {{ required "cache.existingSecret: the Secret with the Redis URL (or cache.redis.enabled)" $root.Values.cache.existingSecret }}
      key: {{ $root.Values.cache.existingSecretKey }}
      {{- end }}
{{- end }}
{{- if and (eq $root.Values.bus.kind "nats") (ne .name "gateway") (ne .name "registry") }}
- name: OMS_{{ $section }}__BUS__NATS__URL
  valueFrom:
    secretKeyRef:
      {{- if $root.Values.bus.nats.existingSecret }}
      name: {{ $root.Values.bus.nats.existingSecret }}
      key: {{ $root.Values.bus.nats.existingSecretKey }}
      {{- else }}
      name: {{ include "oms.secretName" $root }}
      key: nats-url
      {{- end }}
{{- end }}
{{- if eq .name "payments" }}
{{- with $root.Values.payments.stripe }}
{{- if .existingSecret }}
- name: OMS_PAYMENTS__STRIPE__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretKeyKey }}
- name: OMS_PAYMENTS__WEBHOOKS__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .webhookSecretKey }}
      # Without it, webhooks are refused and the reconciler alone moves 3-D Secure payments on.
      optional: true
{{- end }}
{{- end }}
{{- end }}
{{- if eq .name "gateway" }}
{{- if or $root.Values.gateway.users $root.Values.gateway.usersExistingSecret }}
- name: OMS_GATEWAY__USERS
  valueFrom:
    secretKeyRef:
      {{- if $root.Values.gateway.usersExistingSecret }}
      name: {{ $root.Values.gateway.usersExistingSecret }}
      key: {{ $root.Values.gateway.usersExistingSecretKey }}
      {{- else }}
      name: {{ include "oms.secretName" $root }}
      key: gateway-users
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod settings every OMS pod shares. */}}
{{- define "oms.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The settings of the bus, for a section of oms.toml: (dict "root" $ "binary" ... "registryUrl" ...). */}}
{{- define "oms.busToml" -}}
{{- $root := .root -}}
bus.kind = {{ $root.Values.bus.kind | quote }}
{{- if eq $root.Values.bus.kind "kafka" }}
bus.kafka.brokers = {{ include "oms.kafkaBootstrap" $root | quote }}
bus.kafka.client_id = {{ .binary | quote }}
bus.kafka.replication_factor = {{ int $root.Values.topics.replicationFactor }}
bus.kafka.retention = "{{ int $root.Values.topics.retentionHours }}h"
bus.kafka.session_timeout = {{ $root.Values.bus.kafka.sessionTimeout | quote }}
{{- range $key, $value := $root.Values.bus.kafka.properties }}
bus.kafka.properties.{{ $key | quote }} = {{ $value | toString | quote }}
{{- end }}
{{- else }}
bus.nats.client_name = {{ .binary | quote }}
bus.nats.replicas = {{ int $root.Values.bus.nats.replicas }}
bus.nats.max_age = "{{ int $root.Values.topics.retentionHours }}h"
{{- end }}
bus.registry.url = {{ .registryUrl | quote }}
{{- end }}

{{/* The settings every section of oms.toml has: (dict "root" $ "port" ...). */}}
{{- define "oms.commonToml" -}}
{{- $root := .root -}}
listen = "0.0.0.0:{{ int .port }}"
database.max_connections = {{ int $root.Values.postgresql.poolSize }}
log.format = {{ $root.Values.log.format | quote }}
log.filter = {{ $root.Values.log.filter | quote }}
{{- with $root.Values.tracing.zipkinEndpoint }}
trace.zipkin_endpoint = {{ . | quote }}
{{- end }}
{{- end }}
