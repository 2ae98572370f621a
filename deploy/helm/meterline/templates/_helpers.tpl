{{/* Names and labels. */}}
{{- define "meterline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meterline.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meterline.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "meterline.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "meterline.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "meterline.fullname" .)) }}
{{- end -}}

{{- define "meterline.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default (include "meterline.fullname" .) }}
{{- end -}}

{{/*
Checks that stop a wrong deployment at `helm install` instead of at run time.
*/}}
{{- define "meterline.validate" -}}
{{- $members := mul (int .Values.processor.replicas) (int .Values.processor.workers) -}}
{{- if gt $members (int .Values.kafka.partitions) -}}
{{- fail (printf "processor.replicas (%d) x processor.workers (%d) = %d consumer-group members, more than kafka.partitions (%d): the extra members would idle. Lower them, or create a new topic with more partitions (docs/scaling.md)" (int .Values.processor.replicas) (int .Values.processor.workers) $members (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- if and .Values.kafka.saslMechanism (not (hasPrefix "sasl_" (.Values.kafka.securityProtocol | default ""))) -}}
{{- fail (printf "kafka.saslMechanism is %q but kafka.securityProtocol is %q: use sasl_ssl (or sasl_plaintext on a private network)" .Values.kafka.saslMechanism (.Values.kafka.securityProtocol | default "")) -}}
{{- end -}}
{{- if and .Values.clickhouse.insertQuorum (not .Values.clickhouse.cluster) -}}
{{- fail (printf "clickhouse.insertQuorum is %d but clickhouse.cluster is empty: a quorum counts the replicas of a cluster's shard; set clickhouse.cluster, or insertQuorum: 0 for a single server" (int .Values.clickhouse.insertQuorum)) -}}
{{- end -}}
{{- if eq (int .Values.clickhouse.insertQuorum) 1 -}}
{{- fail "clickhouse.insertQuorum is 1, which ClickHouse treats as no quorum: use the replicas per shard (>= 2), or 0" -}}
{{- end -}}
{{- range $key, $_ := .Values.kafka.extra -}}
{{- if has $key (list "bootstrap.servers" "group.id" "sasl.username" "sasl.password" "sasl.jaas.config") -}}
{{- fail (printf "kafka.extra.%s: set it with its own value (kafka.bootstrapServers, kafka.consumerGroup, secrets.kafkaSasl*) so it is not printed in a ConfigMap" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod-level settings every meterline container shares. */}}
{{- define "meterline.podSpecCommon" -}}
serviceAccountName: {{ include "meterline.serviceAccountName" . }}
# meterline never calls the Kubernetes API.
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment of every meterline container: the ConfigMap plus the secrets. */}}
{{- define "meterline.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "meterline.fullname" . }}-config
env:
  - name: METERLINE_CLICKHOUSE_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "meterline.secretName" . }}
        key: clickhouse-password
        optional: true
  {{- if .Values.kafka.saslMechanism }}
  - name: METERLINE_KAFKA_SASL_USERNAME
    valueFrom:
      secretKeyRef:
        name: {{ include "meterline.secretName" . }}
        key: kafka-sasl-username
  - name: METERLINE_KAFKA_SASL_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "meterline.secretName" . }}
        key: kafka-sasl-password
  {{- end }}
{{- end -}}

{{/* Mounts: writable /data and /tmp (the root fs is read-only), keys, CA bundles. */}}
{{- define "meterline.volumeMounts" -}}
volumeMounts:
  - name: data
    mountPath: /data
  - name: tmp
    mountPath: /tmp
  {{- if .keys }}
  # A directory, not a subPath: Kubernetes swaps the file on a Secret update and the
  # gateway reloads keys when the file changes (no restart to rotate a key).
  - name: api-keys
    mountPath: /etc/meterline/keys
    readOnly: true
  {{- end }}
  {{- if .root.Values.kafka.caSecret }}
  - name: kafka-ca
    mountPath: /etc/meterline/kafka-ca
    readOnly: true
  {{- end }}
  {{- if .root.Values.clickhouse.caSecret }}
  - name: clickhouse-ca
    mountPath: /etc/meterline/clickhouse-ca
    readOnly: true
  {{- end }}
{{- end -}}

{{- define "meterline.volumes" -}}
volumes:
  # emptyDir outlives a container restart in the same pod: the processor's attempts
  # file (docs/operations.md) counts deaths across restarts, as it must.
  - name: data
    emptyDir:
      sizeLimit: 256Mi
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if .keys }}
  - name: api-keys
    secret:
      secretName: {{ include "meterline.secretName" .root }}
      items:
        - key: api-keys.yaml
          path: api-keys.yaml
  {{- end }}
  {{- if .root.Values.kafka.caSecret }}
  - name: kafka-ca
    secret:
      secretName: {{ .root.Values.kafka.caSecret }}
  {{- end }}
  {{- if .root.Values.clickhouse.caSecret }}
  - name: clickhouse-ca
    secret:
      secretName: {{ .root.Values.clickhouse.caSecret }}
  {{- end }}
{{- end -}}

{{- define "meterline.configData" -}}
METERLINE_LOG: kafka
METERLINE_STORE: clickhouse
METERLINE_DATA_DIR: /data
METERLINE_HOST: 0.0.0.0
METERLINE_PORT: {{ .Values.gateway.port | quote }}
METERLINE_METRICS_PORT: {{ .Values.processor.metricsPort | quote }}
METERLINE_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
METERLINE_TOPIC: {{ .Values.kafka.topic | quote }}
METERLINE_PARTITIONS: {{ .Values.kafka.partitions | quote }}
METERLINE_REPLICATION_FACTOR: {{ .Values.kafka.replicationFactor | quote }}
METERLINE_CONSUMER_GROUP: {{ .Values.kafka.consumerGroup | quote }}
{{- with .Values.kafka.securityProtocol }}
METERLINE_KAFKA_SECURITY_PROTOCOL: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.saslMechanism }}
METERLINE_KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if .Values.kafka.caSecret }}
METERLINE_KAFKA_SSL_CA_LOCATION: /etc/meterline/kafka-ca/ca.crt
{{- end }}
{{- with .Values.kafka.extra }}
METERLINE_KAFKA_EXTRA: {{ toJson . | quote }}
{{- end }}
METERLINE_CLICKHOUSE_URL: {{ .Values.clickhouse.url | quote }}
METERLINE_CLICKHOUSE_USER: {{ .Values.clickhouse.user | quote }}
METERLINE_CLICKHOUSE_VERIFY: {{ .Values.clickhouse.verify | quote }}
{{- if .Values.clickhouse.caSecret }}
METERLINE_CLICKHOUSE_CA_CERT: /etc/meterline/clickhouse-ca/ca.crt
{{- end }}
METERLINE_DATABASE: {{ .Values.clickhouse.database | quote }}
{{- with .Values.clickhouse.cluster }}
METERLINE_CLICKHOUSE_CLUSTER: {{ . | quote }}
{{- end }}
{{- if .Values.clickhouse.insertQuorum }}
METERLINE_CLICKHOUSE_INSERT_QUORUM: {{ .Values.clickhouse.insertQuorum | quote }}
{{- end }}
METERLINE_API_KEYS_FILE: /etc/meterline/keys/api-keys.yaml
METERLINE_WORKERS: {{ .Values.processor.workers | quote }}
METERLINE_BILLING_TIMEZONE: {{ .Values.config.billingTimezone | quote }}
METERLINE_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
METERLINE_STUCK_AFTER_S: {{ .Values.config.stuckAfterS | quote }}
METERLINE_DEDUPE_HORIZON_DAYS: {{ .Values.config.dedupeHorizonDays | quote }}
{{- range $name, $value := .Values.config.extraEnv }}
METERLINE_{{ $name | upper }}: {{ $value | quote }}
{{- end }}
{{- end -}}
