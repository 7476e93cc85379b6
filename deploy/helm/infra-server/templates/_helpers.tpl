{{/*
The chart's name, for the app.kubernetes.io/name label.
*/}}
{{- define "infra-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Names of the objects: the release name, with the chart's name appended unless
the release name already contains it.
*/}}
{{- define "infra-server.fullname" -}}
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

{{- define "infra-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infra-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "infra-server.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infra-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
"true" when the server runs on PostgreSQL (a URL in values or in a Secret of
the user's), "" on SQLite.
*/}}
{{- define "infra-server.postgres" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/*
The Secret holding the database URL, and the key in it.
*/}}
{{- define "infra-server.databaseSecretName" -}}
{{- default (include "infra-server.fullname" .) .Values.database.existingSecret }}
{{- end }}

{{- define "infra-server.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- required "database.existingSecretKey is required with database.existingSecret" .Values.database.existingSecretKey }}
{{- else }}
{{- print "databaseUrl" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the root key, and the key in it.
*/}}
{{- define "infra-server.rootKeySecretName" -}}
{{- default (include "infra-server.fullname" .) .Values.rootKey.existingSecret }}
{{- end }}

{{- define "infra-server.rootKeySecretKey" -}}
{{- if .Values.rootKey.existingSecret }}
{{- required "rootKey.existingSecretKey is required with rootKey.existingSecret" .Values.rootKey.existingSecretKey }}
{{- else }}
{{- print "rootKey" }}
{{- end }}
{{- end }}

{{/*
"true" when the chart makes the Secret (a value not taken from a Secret of
the user's).
*/}}
{{- define "infra-server.makesSecret" -}}
{{- if or (and .Values.database.url (not .Values.database.existingSecret)) (not .Values.rootKey.existingSecret) }}true{{ end }}
{{- end }}

{{/*
The public URL: publicUrl, or the Service inside the cluster.
*/}}
{{- define "infra-server.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else }}
{{- printf "https://%s.%s.svc:%d" (include "infra-server.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/*
The names of the Service, for the serving certificate.
*/}}
{{- define "infra-server.serviceNames" -}}
{{- $name := include "infra-server.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) | join "," }}
{{- end }}

{{/*
Values that cannot work together fail the install here, with what to set,
rather than the pod. Renders nothing.
*/}}
{{- define "infra-server.check" -}}
{{- $postgres := include "infra-server.postgres" . }}
{{- $replicas := int .Values.replicas }}
{{- if and (gt $replicas 1) (not $postgres) }}
{{- fail (printf "replicas is %d, but no PostgreSQL is configured: set database.url (postgres://USER:PASSWORD@HOST:5432/DATABASE) or database.existingSecret. Without PostgreSQL the server keeps a SQLite file that only one replica can own: set replicas=1 and persistence.enabled=true" $replicas) }}
{{- end }}
{{- if and (not $postgres) (not .Values.persistence.enabled) }}
{{- fail "no database: set database.url (postgres://USER:PASSWORD@HOST:5432/DATABASE) or database.existingSecret; or, for one replica on SQLite, persistence.enabled=true so that the database outlives the pod" }}
{{- end }}
{{- if and .Values.persistence.enabled (gt $replicas 1) }}
{{- fail (printf "persistence.enabled is for one replica on SQLite (the claim is ReadWriteOnce), but replicas is %d: on PostgreSQL leave persistence.enabled=false" $replicas) }}
{{- end }}
{{- if .Values.rootKey.existingSecret }}
{{- $_ := include "infra-server.rootKeySecretKey" . }}
{{- else }}
{{- $_ := include "infra-server.rootKey" . }}
{{- end }}
{{- if .Values.database.existingSecret }}
{{- $_ := include "infra-server.databaseSecretKey" . }}
{{- end }}
{{- end }}

{{/*
rootKey.value, checked: 32 bytes in base64, as the server wants it.
*/}}
{{- define "infra-server.rootKey" -}}
{{- $key := trim .Values.rootKey.value }}
{{- if not $key }}
{{- fail "rootKey.value is required: the key that encrypts the server's secrets, the same for every replica (make one with: head -c 32 /dev/urandom | base64); or rootKey.existingSecret naming a Secret that holds it" }}
{{- end }}
{{- if ne (len (b64dec $key)) 32 }}
{{- fail "rootKey.value must be 32 random bytes in base64: make one with: head -c 32 /dev/urandom | base64" }}
{{- end }}
{{- $key }}
{{- end }}

{{/*
The server's arguments (docs/server.md). The database URL is not among them:
it comes from the Secret, as INFRA_DB.
*/}}
{{- define "infra-server.args" -}}
{{- $args := list "server" "--listen" "0.0.0.0:4443" "--data-dir" "/var/lib/infra" }}
{{- $args = concat $args (list "--public-url" (include "infra-server.publicUrl" .)) }}
{{- /* Each replica's own address for connectors: its pod IP (Kubernetes fills in $(POD_IP)). */}}
{{- $args = concat $args (list "--advertise-url" "https://$(POD_IP):4443") }}
{{- $args = concat $args (list "--tls-san" "$(POD_IP)" "--tls-san" (include "infra-server.serviceNames" .)) }}
{{- range .Values.tlsSan }}
{{- $args = concat $args (list "--tls-san" .) }}
{{- end }}
{{- $args = concat $args (list "--root-key-file" "/etc/infra/root-key/root.key") }}
{{- with .Values.gatewayDomain }}
{{- $args = concat $args (list "--gateway-domain" .) }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $args = concat $args (list "--metrics-listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) }}
{{- end }}
{{- with .Values.logFormat }}
{{- $args = concat $args (list "--log-format" .) }}
{{- end }}
{{- $args = concat $args .Values.extraArgs }}
{{- toJson $args }}
{{- end }}
