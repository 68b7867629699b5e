{{/*
Names, labels and the pieces every Conveyor pod shares: settings, NATS credentials, security.
*/}}

{{- define "conveyor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api") */}}
{{- define "conveyor.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "conveyor.image" -}}
{{- $image := .image | default dict -}}
{{- $repository := $image.repository | default .ctx.Values.image.repository -}}
{{- $tag := $image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
image: {{ printf "%s:%s" $repository $tag | quote }}
imagePullPolicy: {{ $image.pullPolicy | default .ctx.Values.image.pullPolicy }}
{{- end -}}

{{/* The stream every task consumer lives on: events.topology.Topology.tasks_stream. */}}
{{- define "conveyor.tasksStream" -}}
{{- printf "%s_TASKS" (upper .Values.conveyor.namespace) -}}
{{- end -}}

{{/* The durable consumer of one task: events.topology.Topology.task_consumer(queue, task). */}}
{{- define "conveyor.taskConsumer" -}}
{{- printf "task:%s:%s" .queue .task -}}
{{- end -}}

{{/*
The CONVEYOR_* settings as a YAML map: the ConfigMap's data, and the topology hook's env (a
pre-install hook runs before the ConfigMap exists).
*/}}
{{- define "conveyor.settings" -}}
{{- $c := .Values.conveyor -}}
CONVEYOR_NATS_URL: {{ .Values.nats.url | quote }}
CONVEYOR_NAMESPACE: {{ $c.namespace | quote }}
CONVEYOR_PARTITIONS: {{ $c.partitions | toString | quote }}
CONVEYOR_REPLICAS: {{ $c.replicas | toString | quote }}
CONVEYOR_STARTUP_TIMEOUT: {{ $c.startupTimeoutSeconds | toString | quote }}
CONVEYOR_LOG_LEVEL: {{ $c.logLevel | quote }}
{{- range $name, $value := $c.extraSettings }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* A checksum of the settings, so that pods roll when they change. */}}
{{- define "conveyor.settingsChecksum" -}}
checksum/settings: {{ include "conveyor.settings" . | sha256sum | trunc 16 | quote }}
{{- end -}}

{{/*
NATS credentials and TLS of one role: (dict "ctx" $ "secret" NAME). Renders env entries;
conveyor.natsMounts and conveyor.natsVolumes render the files they point at.
*/}}
{{- define "conveyor.natsEnv" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- if eq $auth.mode "userPassword" }}
- name: CONVEYOR_NATS_USER
  valueFrom: {secretKeyRef: {name: {{ .secret | quote }}, key: user}}
- name: CONVEYOR_NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .secret | quote }}, key: password}}
{{- else if eq $auth.mode "token" }}
- name: CONVEYOR_NATS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .secret | quote }}, key: token}}
{{- else if eq $auth.mode "nkey" }}
- name: CONVEYOR_NATS_NKEY_SEED
  value: /etc/conveyor/nats-auth/nkey.seed
{{- else if eq $auth.mode "creds" }}
- name: CONVEYOR_NATS_CREDS
  value: /etc/conveyor/nats-auth/user.creds
{{- end }}
{{- with .ctx.Values.nats.tls }}
{{- if .enabled }}
- name: CONVEYOR_NATS_TLS_CA
  value: /etc/conveyor/nats-tls/ca.crt
{{- if .clientCert }}
- name: CONVEYOR_NATS_TLS_CERT
  value: /etc/conveyor/nats-tls/tls.crt
- name: CONVEYOR_NATS_TLS_KEY
  value: /etc/conveyor/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "conveyor.natsMounts" -}}
{{- if has .ctx.Values.nats.auth.mode (list "nkey" "creds") }}
- name: nats-auth
  mountPath: /etc/conveyor/nats-auth
  readOnly: true
{{- end }}
{{- if .ctx.Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/conveyor/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "conveyor.natsVolumes" -}}
{{- $mode := .ctx.Values.nats.auth.mode -}}
{{- if has $mode (list "nkey" "creds") }}
- name: nats-auth
  secret:
    secretName: {{ .secret | quote }}
    defaultMode: 0440
    items:
      - key: {{ ternary "nkey.seed" "user.creds" (eq $mode "nkey") }}
        path: {{ ternary "nkey.seed" "user.creds" (eq $mode "nkey") }}
{{- end }}
{{- with .ctx.Values.nats.tls }}
{{- if .enabled }}
- name: nats-tls
  secret:
    secretName: {{ .secret | quote }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
{{- if .clientCert }}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secret of a role, or a clear error when credentials are on and it is not named. */}}
{{- define "conveyor.roleSecret" -}}
{{- $secret := .secret -}}
{{- if and (ne .ctx.Values.nats.auth.mode "none") (not $secret) -}}
{{- fail (printf "nats.auth.mode is %s but %s names no Secret" .ctx.Values.nats.auth.mode .where) -}}
{{- end -}}
{{- $secret -}}
{{- end -}}

{{- define "conveyor.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* Pod-level fields every Conveyor pod shares. */}}
{{- define "conveyor.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . | quote }}
{{- end }}
# No Conveyor process talks to the Kubernetes API.
automountServiceAccountToken: false
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
{{- end -}}

{{/* GET /healthz probes on a named port. */}}
{{- define "conveyor.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 5
  # Long enough for CONVEYOR_STARTUP_TIMEOUT: a process waits that long for the topology.
  failureThreshold: {{ add (div .ctx.Values.conveyor.startupTimeoutSeconds 5) 6 }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "conveyor.pdb" -}}
{{- if .pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "conveyor.labels" .ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "conveyor.selector" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}
