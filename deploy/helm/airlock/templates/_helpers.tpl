{{/* The chart's name. */}}
{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's objects' base name. */}}
{{- define "airlock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the gateway's pods. */}}
{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Labels of every object. */}}
{{- define "airlock.labels" -}}
{{ include "airlock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "airlock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "airlock.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The port of a listen address such as 0.0.0.0:6432 or [::]:6432. */}}
{{- define "airlock.port" -}}
{{- splitList ":" . | last -}}
{{- end -}}

{{/*
Refuses settings that would lose or split the audit trail: several replicas
on the default SQLite store (store.url absent or sqlite://) would each keep
their own approvals, grants and events.
*/}}
{{- define "airlock.validate" -}}
{{- $url := dig "store" "url" "" .Values.config | toString -}}
{{- if and (gt (int .Values.replicas) 1) (not (hasPrefix "postgres://" $url)) -}}
{{- fail (printf "replicas is %d, but config.store.url is %s: several replicas need a PostgreSQL store (store.url: postgres://…) that they share; an SQLite store is per pod" (int .Values.replicas) (ternary "not set (the default SQLite store)" (quote $url) (eq $url ""))) -}}
{{- end -}}
{{- if not (dig "listen" "http" "" .Values.config) -}}
{{- fail "config.listen.http is required: the probes use /healthz and /readyz on it" -}}
{{- end -}}
{{- end -}}
