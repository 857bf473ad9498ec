{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "clipserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, or the release name alone when it already contains the chart name.
Kept to 56 characters so that "<fullname>-triton" still fits 63.
*/}}
{{- define "clipserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "clipserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels. Every object gets one app.kubernetes.io/component (api, triton or test): the Service and
the PodDisruptionBudget select component=api, so no other pod may carry that value.
*/}}
{{- define "clipserve.labels" -}}
{{ include "clipserve.componentLabels" (dict "root" . "component" "api") }}
{{- end }}

{{- define "clipserve.selectorLabels" -}}
{{ include "clipserve.componentSelectorLabels" (dict "root" . "component" "api") }}
{{- end }}

{{/* Argument: dict "root" $ "component" NAME. */}}
{{- define "clipserve.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "clipserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Argument: dict "root" $ "component" NAME, and optionally "version" (default appVersion). */}}
{{- define "clipserve.componentLabels" -}}
helm.sh/chart: {{ include "clipserve.chart" .root }}
{{ include "clipserve.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .version | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "clipserve.triton.fullname" -}}
{{- printf "%s-triton" (include "clipserve.fullname" .) }}
{{- end }}

{{- define "clipserve.triton.selectorLabels" -}}
{{ include "clipserve.componentSelectorLabels" (dict "root" . "component" "triton") }}
{{- end }}

{{- define "clipserve.triton.labels" -}}
{{ include "clipserve.componentLabels" (dict "root" . "component" "triton" "version" .Values.triton.image.tag) }}
{{- end }}

{{- define "clipserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clipserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The clipserve image: repository:tag or repository@digest; the CUDA tag when gpu.enabled. */}}
{{- define "clipserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary .Values.gpu.imageTagSuffix "" .Values.gpu.enabled)) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Directory clipserve reads models from. */}}
{{- define "clipserve.modelsDir" -}}
{{- if eq .Values.models.source "image" }}/app/models{{ else }}{{ .Values.models.mountPath }}{{ end }}
{{- end }}

{{- define "clipserve.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "clipserve.fullname" .)) }}
{{- end }}

{{- define "clipserve.apiKeysSecretKey" -}}
{{- if .Values.apiKeys.existingSecret }}{{ .Values.apiKeys.existingSecretKey }}{{ else }}api-keys{{ end }}
{{- end }}

{{- define "clipserve.qdrantSecretName" -}}
{{- .Values.qdrant.external.existingSecret | default (printf "%s-qdrant" (include "clipserve.fullname" .)) }}
{{- end }}

{{- define "clipserve.qdrantSecretKey" -}}
{{- if .Values.qdrant.external.existingSecret }}{{ .Values.qdrant.external.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/* True when a Qdrant API key is configured (chart-made or existing Secret). */}}
{{- define "clipserve.qdrantApiKey" -}}
{{- if and (eq .Values.qdrant.mode "external") (or .Values.qdrant.external.apiKey .Values.qdrant.external.existingSecret) }}true{{ end }}
{{- end }}

{{- define "clipserve.dataClaimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "clipserve.fullname" .)) }}
{{- end }}

{{- define "clipserve.modelsClaimName" -}}
{{- .Values.models.pvc.existingClaim }}
{{- end }}

{{/* Whether /data is a PVC: for the embedded store only. */}}
{{- define "clipserve.dataPersistent" -}}
{{- if eq .Values.qdrant.mode "embedded" }}true{{ end }}
{{- end }}

{{/*
Combinations that cannot work: fail at render time with a message rather than deploy them.
*/}}
{{- define "clipserve.validate" -}}
{{- if eq .Values.qdrant.mode "embedded" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "qdrant.mode=embedded keeps the store in one pod's volume: replicaCount must be 1 (use qdrant.mode=external to scale out)" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling needs qdrant.mode=external: the embedded store allows one replica" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.qdrant.mode "external") (not .Values.qdrant.external.url) }}
{{- fail "qdrant.mode=external needs qdrant.external.url (e.g. http://qdrant.qdrant.svc:6333)" }}
{{- end }}
{{- if and .Values.apiKeys.enabled (not .Values.apiKeys.existingSecret) (not .Values.apiKeys.keys) }}
{{- fail "apiKeys.enabled needs apiKeys.keys or apiKeys.existingSecret" }}
{{- end }}
{{- if and (eq .Values.models.source "pvc") (not .Values.models.pvc.existingClaim) }}
{{- fail "models.source=pvc needs models.pvc.existingClaim (a claim that already holds the model repository)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) (not .Values.autoscaling.queueDepth.enabled) }}
{{- fail "autoscaling needs a metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or queueDepth.enabled" }}
{{- end }}
{{- if and .Values.gpu.enabled .Values.triton.enabled }}
{{- fail "gpu.enabled and triton.enabled: with Triton the clipserve pods run no inference and would hold a GPU they never use; Triton's GPU is triton.gpu.* (unset gpu.enabled)" }}
{{- end }}
{{- $drain := add (int .Values.preStopSleepSeconds) (include "clipserve.requestTimeoutSeconds" . | int) }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must cover preStopSleepSeconds plus the request timeout (%d s): in-flight requests would be killed" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- end }}

{{/* CLIPSERVE_REQUEST_TIMEOUT_S (config.REQUEST_TIMEOUT_S, default 30), whole seconds rounded up:
the server's graceful-shutdown drain. */}}
{{- define "clipserve.requestTimeoutSeconds" -}}
{{- $timeout := index .Values.config "REQUEST_TIMEOUT_S" | default 30 | float64 }}
{{- ceil $timeout | int }}
{{- end }}

{{/*
Volumes and init container that provide the model repository at .Values.models.mountPath for
a pod (clipserve with models.source pvc|init; Triton always). Argument: dict "root" $ "forTriton" bool.
*/}}
{{- define "clipserve.modelsVolume" -}}
{{- $ := .root }}
{{- if eq $.Values.models.source "pvc" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "clipserve.modelsClaimName" $ }}
    readOnly: true
{{- else }}
- name: models
  emptyDir:
    sizeLimit: {{ $.Values.models.init.sizeLimit }}
{{- end }}
{{- end }}

{{/*
Where an init container sees the models emptyDir: its own path, never models.mountPath, which is
where a model image keeps the models it copies from.
*/}}
{{- define "clipserve.modelsInitTarget" -}}/mnt/clipserve-models{{- end }}

{{- define "clipserve.modelsInitContainer" -}}
{{- $ := .root }}
{{- if eq $.Values.models.source "init" }}
- name: fetch-models
  image: {{ $.Values.models.init.image }}
  imagePullPolicy: {{ $.Values.models.init.imagePullPolicy }}
  command:
    {{- toYaml $.Values.models.init.command | nindent 4 }}
  env:
    - name: MODELS_DIR
      value: {{ include "clipserve.modelsInitTarget" $ | quote }}
    {{- with $.Values.models.init.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $.Values.models.init.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .securityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ include "clipserve.modelsInitTarget" $ }}
{{- else if and (eq $.Values.models.source "image") .forTriton }}
{{- /* Triton's image has no models: copy the ones baked into the clipserve image. */}}
- name: copy-models
  image: {{ include "clipserve.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: ["sh", "-c", "cp -R /app/models/. \"$MODELS_DIR\"/"]
  env:
    - name: MODELS_DIR
      value: {{ include "clipserve.modelsInitTarget" $ | quote }}
  securityContext:
    {{- toYaml .securityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ include "clipserve.modelsInitTarget" $ }}
{{- end }}
{{- end }}
