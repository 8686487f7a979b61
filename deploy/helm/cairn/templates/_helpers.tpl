{{/* Names. */}}
{{- define "cairn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cairn.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of a role's objects: (dict "root" $ "role" "node"). */}}
{{- define "cairn.roleName" -}}
{{- printf "%s-%s" (include "cairn.fullname" .root) .role }}
{{- end }}

{{/* The headless Service that gives a role's pods their DNS names. */}}
{{- define "cairn.headlessName" -}}
{{- printf "%s-%s-headless" (include "cairn.fullname" .root) .role }}
{{- end }}

{{- define "cairn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cairn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels. */}}
{{- define "cairn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "cairn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cairn
{{- end }}

{{/* Selector labels of one role: (dict "root" $ "role" "node"). */}}
{{- define "cairn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cairn.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "cairn.roleLabels" -}}
{{ include "cairn.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "cairn.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Every coordinator's stable address, host:port, one per StatefulSet pod. */}}
{{- define "cairn.coordinatorAddresses" -}}
{{- $root := . }}
{{- $addresses := list }}
{{- range $ordinal := until (int .Values.coordinator.replicas) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" (include "cairn.roleName" (dict "root" $root "role" "coordinator")) $ordinal (include "cairn.headlessName" (dict "root" $root "role" "coordinator")) $root.Release.Namespace $root.Values.clusterDomain (int $root.Values.coordinator.ports.grpc)) }}
{{- end }}
{{- toJson $addresses }}
{{- end }}

{{/* The gateway Service's address inside the cluster, host:port. */}}
{{- define "cairn.gatewayAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "cairn.roleName" (dict "root" . "role" "gateway")) .Release.Namespace .Values.clusterDomain (int .Values.gateway.service.port) }}
{{- end }}

{{/*
A TOML value: strings quoted (JSON escapes are TOML escapes), whole numbers without a fraction
(YAML numbers arrive as floats), lists and inline tables recursively.
*/}}
{{- define "cairn.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}{{ if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $element := . }}{{ if $i }}, {{ end }}{{ include "cairn.tomlValue" $element }}{{ end }}]
{{- else if kindIs "map" . }}{{ $map := . }}{ {{ range $i, $key := keys . | sortAlpha }}{{ if $i }}, {{ end }}{{ $key }} = {{ include "cairn.tomlValue" (get $map $key) }}{{ end }} }
{{- else }}{{ fail (printf "cairn: a configuration value cannot be written as TOML: %v" .) }}
{{- end }}
{{- end }}

{{/* A TOML document from a map: top-level values first, then one table per nested map. */}}
{{- define "cairn.toml" -}}
{{- $document := . }}
{{- range $key := keys $document | sortAlpha }}
{{- $value := get $document $key }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "cairn.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $document | sortAlpha }}
{{- $table := get $document $key }}
{{- if kindIs "map" $table }}

[{{ $key }}]
{{- range $field := keys $table | sortAlpha }}
{{ $field }} = {{ include "cairn.tomlValue" (get $table $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* What every binary's TOML shares: logging and trace export. */}}
{{- define "cairn.commonConfig" -}}
{{- $tracing := dict "otlp_endpoint" .Values.tracing.otlpEndpoint "sampling_ratio" .Values.tracing.samplingRatio }}
{{- toJson (dict "log" (dict "format" .Values.log.format "filter" .Values.log.filter) "tracing" $tracing) }}
{{- end }}

{{- define "cairn.coordinatorConfig" -}}
{{- $root := . }}
{{- $members := list }}
{{- range $index, $address := include "cairn.coordinatorAddresses" . | fromJsonArray }}
{{- $members = append $members (printf "%d=%s" (add1 $index) $address) }}
{{- end }}
{{- $config := include "cairn.commonConfig" . | fromJson }}
{{- $_ := set $config "listen_address" (printf "0.0.0.0:%d" (int .Values.coordinator.ports.grpc)) }}
{{- $_ := set $config "metrics_listen_address" (printf "0.0.0.0:%d" (int .Values.coordinator.ports.metrics)) }}
{{- $_ := set $config "data_dir" "/data" }}
{{- $_ := set $config "members" $members }}
{{- $_ := set $config "shard_count" .Values.cluster.shardCount }}
{{- $_ := set $config "replication_factor" .Values.cluster.replicationFactor }}
{{- $config = mergeOverwrite $config (include "cairn.tlsConfig" (dict "root" . "role" "coordinator") | fromJson) }}
{{- include "cairn.toml" (mergeOverwrite $config (deepCopy .Values.coordinator.config)) }}
{{- end }}

{{- define "cairn.nodeConfig" -}}
{{- $config := include "cairn.commonConfig" . | fromJson }}
{{- $_ := set $config "listen_address" (printf "0.0.0.0:%d" (int .Values.node.ports.grpc)) }}
{{- $_ := set $config "metrics_listen_address" (printf "0.0.0.0:%d" (int .Values.node.ports.metrics)) }}
{{- $_ := set $config "data_dir" "/data" }}
{{- $_ := set $config "coordinator" (dict "addresses" (include "cairn.coordinatorAddresses" . | fromJsonArray)) }}
{{- $config = mergeOverwrite $config (include "cairn.tlsConfig" (dict "root" . "role" "node") | fromJson) }}
{{- include "cairn.toml" (mergeOverwrite $config (deepCopy .Values.node.config)) }}
{{- end }}

{{- define "cairn.gatewayConfig" -}}
{{- $config := include "cairn.commonConfig" . | fromJson }}
{{- $_ := set $config "listen_address" (printf "0.0.0.0:%d" (int .Values.gateway.ports.grpc)) }}
{{- $_ := set $config "metrics_listen_address" (printf "0.0.0.0:%d" (int .Values.gateway.ports.metrics)) }}
{{- $_ := set $config "coordinators" (include "cairn.coordinatorAddresses" . | fromJsonArray) }}
{{- $config = mergeOverwrite $config (include "cairn.tlsConfig" (dict "root" . "role" "gateway") | fromJson) }}
{{- include "cairn.toml" (mergeOverwrite $config (deepCopy .Values.gateway.config)) }}
{{- end }}

{{/* Settings a schema cannot judge: relations between values. */}}
{{- define "cairn.validate" -}}
{{- if lt (int .Values.node.replicas) (int .Values.cluster.replicationFactor) }}
{{- fail (printf "node.replicas (%d) must be at least cluster.replicationFactor (%d): every replica of a shard needs its own storage node" (int .Values.node.replicas) (int .Values.cluster.replicationFactor)) }}
{{- end }}
{{- if and .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.certManager.enabled) }}
{{- range $role := list "node" "coordinator" "gateway" }}
{{- if not (include "cairn.tlsSecretName" (dict "root" $ "role" $role)) }}
{{- fail (printf "tls.enabled needs a Secret for the %s role: tls.%sSecretName or tls.internalSecretName (kubernetes.io/tls with ca.crt), or tls.certManager.enabled" $role $role) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.gateway.service.nodePort (eq .Values.gateway.service.type "ClusterIP") }}
{{- fail "gateway.service.nodePort needs gateway.service.type NodePort or LoadBalancer" }}
{{- end }}
{{- if hasKey .Values.node.config "data_dir" }}{{ fail "node.config.data_dir is fixed by the chart (/data, the volume)" }}{{ end }}
{{- if hasKey .Values.coordinator.config "data_dir" }}{{ fail "coordinator.config.data_dir is fixed by the chart (/data, the volume)" }}{{ end }}
{{- if hasKey .Values.coordinator.config "members" }}{{ fail "coordinator.config.members is written by the chart from coordinator.replicas" }}{{ end }}
{{- end }}

{{/* Pod annotations: Prometheus scraping, the configuration's checksum (a changed file rolls the pods), extra ones. */}}
{{- define "cairn.podAnnotations" -}}
{{- $root := .root }}
{{- if $root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
checksum/config: {{ .config | sha256sum }}
{{- with $root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Affinity of one role: (dict "root" $ "role" "node" "values" .Values.node). */}}
{{- define "cairn.affinity" -}}
{{- $values := .values }}
{{- if $values.affinity }}
{{- toYaml $values.affinity }}
{{- else if eq $values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "cairn.selectorLabels" . | nindent 10 }}
{{- else if eq $values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "cairn.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}

{{- define "cairn.topologySpread" -}}
{{- $values := .values }}
{{- if $values.topologySpread.enabled }}
- maxSkew: {{ $values.topologySpread.maxSkew }}
  topologyKey: {{ $values.topologySpread.topologyKey }}
  whenUnsatisfiable: {{ $values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "cairn.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Startup, liveness and readiness probes on the metrics port's /livez and /readyz. */}}
{{- define "cairn.probes" -}}
startupProbe:
  httpGet: {path: /livez, port: metrics}
  {{- toYaml .probes.startup | nindent 2 }}
livenessProbe:
  httpGet: {path: /livez, port: metrics}
  {{- toYaml .probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  {{- toYaml .probes.readiness | nindent 2 }}
{{- end }}

{{/* The pod's own name and namespace, for addresses passed as $(POD_NAME) in args. */}}
{{- define "cairn.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end }}

{{/* The Secret with a role's certificate: (dict "root" $ "role" "node"). */}}
{{- define "cairn.tlsSecretName" -}}
{{- $tls := .root.Values.tls }}
{{- if $tls.certManager.enabled }}
{{- printf "%s-tls" (include "cairn.roleName" (dict "root" .root "role" .role)) }}
{{- else }}
{{- default $tls.internalSecretName (get $tls (printf "%sSecretName" .role)) }}
{{- end }}
{{- end }}

{{/* A role's [tls] table (and the gateway's [public_tls]), merged into its configuration. */}}
{{- define "cairn.tlsConfig" -}}
{{- $tls := .root.Values.tls }}
{{- $config := dict }}
{{- if $tls.enabled }}
{{- $internal := printf "%s/internal" $tls.mountPath }}
{{- $_ := set $config "tls" (dict "cert_file" (printf "%s/tls.crt" $internal) "key_file" (printf "%s/tls.key" $internal) "ca_file" (printf "%s/ca.crt" $internal)) }}
{{- if eq .role "gateway" }}
{{- $public := dict "client_auth" (ternary "required" "none" $tls.requireClientCertificates) }}
{{- if $tls.clientSecretName }}
{{- $client := printf "%s/client" $tls.mountPath }}
{{- $_ := set $public "cert_file" (printf "%s/tls.crt" $client) }}
{{- $_ := set $public "key_file" (printf "%s/tls.key" $client) }}
{{- $_ := set $public "client_ca_file" (printf "%s/ca.crt" $client) }}
{{- end }}
{{- $_ := set $config "public_tls" $public }}
{{- end }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/* Mounts and volumes of a role's TLS Secret: (dict "root" $ "role" "node"). */}}
{{- define "cairn.tlsVolumeMounts" -}}
{{- if .root.Values.tls.enabled }}
- name: tls-internal
  mountPath: {{ printf "%s/internal" .root.Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "cairn.tlsVolumes" -}}
{{- if .root.Values.tls.enabled }}
- name: tls-internal
  secret:
    secretName: {{ include "cairn.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Pod-level settings every role shares. */}}
{{- define "cairn.podCommon" -}}
serviceAccountName: {{ include "cairn.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- /* Service links would put CAIRN_*_PORT variables into the environment the binaries read as configuration. */}}
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
