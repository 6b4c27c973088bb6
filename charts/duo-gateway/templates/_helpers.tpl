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

{{/*
A URA as the CRD wants it: a string of 8 digits. Arguments: the value and its path in the values. `--set
organization.ura=12345678` makes a number of it (Helm keeps digits with a leading zero as a string): a number
of exactly 8 digits is taken as written; any other number (an unquoted 00000659 in a values file is read as
octal or loses its zeros) is refused with the way to pass it.
*/}}
{{- define "duo-gateway.ura" -}}
{{- $v := index . 0 -}}
{{- $path := index . 1 -}}
{{- if kindIs "string" $v -}}
{{- $v | quote -}}
{{- else -}}
{{- $digits := printf "%d" (int64 $v) -}}
{{- if and (eq (len $digits) 8) (eq (float64 $v) (float64 (int64 $v))) -}}
{{- $digits | quote -}}
{{- else -}}
{{- fail (printf "%s must be a string of 8 digits, got the number %v (leading zeros lost?): use --set-string %s=<8 digits> or quote it in the values file" $path $v $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
