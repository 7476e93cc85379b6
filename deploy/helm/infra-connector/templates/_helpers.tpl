{{/*
The chart's name, for the app.kubernetes.io/name label.
*/}}
{{- define "infra-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Names of the objects: the release name, with the chart's name appended unless
the release name already contains it (release "infra-connector" makes the same
names as deploy/kubernetes/connector.yaml).
*/}}
{{- define "infra-connector.fullname" -}}
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

{{- define "infra-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infra-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "infra-connector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infra-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "infra-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "infra-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the access key, and the key in it.
*/}}
{{- define "infra-connector.secretName" -}}
{{- default (include "infra-connector.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "infra-connector.secretKey" -}}
{{- if .Values.existingSecret }}
{{- required "existingSecretKey is required with existingSecret" .Values.existingSecretKey }}
{{- else }}
{{- print "accessKey" }}
{{- end }}
{{- end }}

{{/*
A name the connector accepts (lower-case letters, digits, "-"; at most 63),
or a failed render naming the value: (list "cluster.name" .Values.cluster.name).
*/}}
{{- define "infra-connector.validName" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 }}
{{- if not $value }}
{{- fail (printf "%s is required" $key) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,62}$" $value) }}
{{- fail (printf "%s %q is not a valid name: use lower-case letters, digits and -" $key $value) }}
{{- end }}
{{- $value }}
{{- end }}

{{/*
The connector's configuration file (docs/connectors.md), checked here so that
a missing or contradictory value fails the install rather than the pod.
*/}}
{{- define "infra-connector.config" -}}
{{- $server := required "server is required: the Infra server's URL, https://host[:port]" .Values.server }}
{{- if not (hasPrefix "https://" $server) }}
{{- fail (printf "server %q must start with https://" $server) }}
{{- end }}
{{- $tls := .Values.tls }}
{{- $trust := compact (list $tls.trustedFingerprint $tls.caCert $tls.caFile) }}
{{- if ne (len $trust) 1 }}
{{- fail "set exactly one of tls.trustedFingerprint (the fingerprint 'infra server' prints at start), tls.caCert (the server's CA in PEM) or tls.caFile" }}
{{- end }}
{{- if and (not .Values.existingSecret) (not .Values.accessKey) }}
{{- fail "accessKey is required (from 'infra keys add --connector --name NAME --quiet'), or existingSecret naming a Secret that holds it" }}
{{- end }}
{{- $destinations := list }}
{{- if .Values.cluster.enabled }}
{{- $cluster := dict "name" (include "infra-connector.validName" (list "cluster.name" .Values.cluster.name)) "kind" "kubernetes" "inCluster" true }}
{{- if not .Values.cluster.rbacSync }}
{{- $_ := set $cluster "rbacSync" false }}
{{- end }}
{{- with .Values.cluster.labels }}
{{- $_ := set $cluster "labels" . }}
{{- end }}
{{- $destinations = append $destinations $cluster }}
{{- end }}
{{- $destinations = concat $destinations .Values.destinations }}
{{- if not $destinations }}
{{- fail "no destinations: set cluster.name, or cluster.enabled=false with entries in destinations" }}
{{- end -}}
server: {{ $server | quote }}
name: {{ include "infra-connector.validName" (list "name" .Values.name) | quote }}
accessKeyFile: {{ printf "/etc/infra/secret/%s" (include "infra-connector.secretKey" .) | quote }}
dataDir: /var/lib/infra
# The probes reach the admin listener (GET /readyz, /livez) through the pod IP.
adminListen: 0.0.0.0:4480
tls:
{{- if $tls.trustedFingerprint }}
  trustedFingerprint: {{ $tls.trustedFingerprint | quote }}
{{- else if $tls.caCert }}
  caFile: /etc/infra/server-ca.pem
{{- else }}
  caFile: {{ $tls.caFile | quote }}
{{- end }}
{{- if .Values.webhook.enabled }}
{{- if not .Values.cluster.enabled }}
{{- fail "webhook.enabled needs cluster.enabled: the webhook admits the pods of the cluster the connector serves" }}
{{- end }}
# The admission webhook that injects infra proxy sidecars (docs/workloads.md).
webhook:
  listen: {{ printf "0.0.0.0:%v" .Values.webhook.port | quote }}
  names:
    - {{ printf "%s.%s.svc" (include "infra-connector.fullname" .) .Release.Namespace | quote }}
  image: {{ .Values.webhook.image | default (printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion)) | quote }}
{{- end }}
destinations:
{{- toYaml $destinations | nindent 2 }}
{{- end }}
