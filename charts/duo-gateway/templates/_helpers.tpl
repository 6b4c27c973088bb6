{{/* Name of the DuoGateway: nameOverride or the release name. */}}
{{- define "duo-gateway.name" -}}
{{- default .Release.Name .Values.nameOverride -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "duo-gateway.labels" -}}
app.kubernetes.io/name: duo-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: duo
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The network label, as a one-entry dict (empty when network is empty). */}}
{{- define "duo-gateway.networkLabel" -}}
{{- if .Values.network -}}
duo.beeldbeschikbaarheid.nl/network: {{ .Values.network | quote }}
{{- end -}}
{{- end -}}

{{/*
A trustBundle value ({from, name, key, pem}) as the CRD's TrustBundleRef. Arguments: the value and the name
of the ConfigMap the chart creates for from: pem.
*/}}
{{- define "duo-gateway.trustBundleRef" -}}
{{- $tb := index . 0 -}}
{{- $pemName := index . 1 -}}
{{- if eq $tb.from "secret" -}}
secret:
  name: {{ $tb.name }}
  key: {{ default "ca.crt" $tb.key }}
{{- else if eq $tb.from "pem" -}}
configMap:
  name: {{ $pemName }}
  key: ca.crt
{{- else -}}
configMap:
  name: {{ $tb.name }}
  key: {{ default "ca.crt" $tb.key }}
{{- end -}}
{{- end -}}
