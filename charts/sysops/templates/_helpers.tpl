{{/* Chart name, overridable with nameOverride. */}}
{{- define "sysops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every object: "<release>-sysops", or the release name if it already contains the chart name. */}}
{{- define "sysops.fullname" -}}
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

{{- define "sysops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the server pod; plugin pods never carry app.kubernetes.io/component=server. */}}
{{- define "sysops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sysops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sysops.labels" -}}
helm.sh/chart: {{ include "sysops.chart" . }}
{{ include "sysops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sysops
{{- end }}

{{- define "sysops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sysops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the bearer token (key "token"). */}}
{{- define "sysops.authSecretName" -}}
{{- default (printf "%s-auth" (include "sysops.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "sysops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The policy file, as YAML. */}}
{{- define "sysops.policy" -}}
{{- toYaml .Values.policy }}
{{- end }}

{{/* The PersistentVolumeClaim holding the server's home: persistence.existingClaim, else "<fullname>-home". */}}
{{- define "sysops.homeClaimName" -}}
{{- default (printf "%s-home" (include "sysops.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Secret holding the server's TLS certificate (tls.crt, tls.key, ca.crt): tls.existingSecret, else "<fullname>-tls". */}}
{{- define "sysops.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "sysops.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* Secret holding the key plugin pod tokens derive from (token-key): keys.existingSecret, else "<fullname>-keys". */}}
{{- define "sysops.keysSecretName" -}}
{{- default (printf "%s-keys" (include "sysops.fullname" .)) .Values.keys.existingSecret }}
{{- end }}
