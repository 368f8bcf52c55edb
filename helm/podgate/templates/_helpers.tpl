{{/* Names and labels, as `helm create` makes them. */}}
{{- define "podgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podgate.fullname" -}}
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

{{- define "podgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "podgate.labels" -}}
{{ include "podgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "podgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Paths inside the container (the image's contract). */}}
{{- define "podgate.configPath" -}}/etc/podgate/podgate.toml{{- end -}}
{{- define "podgate.keysDir" -}}/etc/podgate/keys{{- end -}}
{{- define "podgate.keysPath" -}}{{ include "podgate.keysDir" . }}/keys.toml{{- end -}}
{{- define "podgate.port" -}}8000{{- end -}}

{{/* The environment variable podgate reads the RunPod key from ([runpod] api_key_env). */}}
{{- define "podgate.apiKeyEnv" -}}
{{- (.Values.config.runpod | default dict).api_key_env | default "RUNPOD_API_KEY" -}}
{{- end -}}

{{/*
Where each secret comes from. An existing Secret (existingSecret / existingSecretKey) wins
over a value given inline; an inline value goes into the chart's own Secret (named like the
release) under a fixed key. "podgate.secretRef" takes (list section inlineValue ownKey root
"name"|"key") and gives "" when the secret is not configured at all.
*/}}
{{- define "podgate.secretRef" -}}
{{- $section := index . 0 -}}
{{- $inline := index . 1 -}}
{{- $ownKey := index . 2 -}}
{{- $root := index . 3 -}}
{{- $want := index . 4 -}}
{{- if $section.existingSecret -}}
{{- ternary $section.existingSecret $section.existingSecretKey (eq $want "name") -}}
{{- else if $inline -}}
{{- ternary (include "podgate.fullname" $root) $ownKey (eq $want "name") -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart creates its own Secret: something secret was given inline. */}}
{{- define "podgate.ownsSecret" -}}
{{- $v := .Values -}}
{{- if or (and $v.runpod.apiKey (not $v.runpod.existingSecret)) (and $v.clientKeys.keys (not $v.clientKeys.existingSecret)) (and $v.redis.url (not $v.redis.existingSecret)) -}}true{{- end -}}
{{- end -}}

{{/*
The bundled Redis subchart's URL: its Service is "<release>-redis" (or its fullnameOverride),
as charts/redis/templates/_helpers.tpl names it.
*/}}
{{- define "podgate.redisSubchartUrl" -}}
{{- $r := .Values.redis -}}
{{- $host := default (printf "%s-redis" .Release.Name) $r.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- printf "redis://%s:%d/0" $host (int (($r.service | default dict).port | default 6379)) -}}
{{- end -}}

{{/*
Values that contradict each other or that the chart owns: fail with a line that says which.
*/}}
{{- define "podgate.checkValues" -}}
{{- $cfg := .Values.config | default dict -}}
{{- $server := $cfg.server | default dict -}}
{{- range $key := list "host" "port" "drain_s" -}}
{{- if hasKey $server $key -}}
{{- fail (printf "config.server.%s is set by the chart (host/port: the container's args; drain_s: shutdown.drainSeconds); remove it" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "keys" "keys_file" "redis" "api_key" -}}
{{- if hasKey $cfg $key -}}
{{- fail (printf "config.%s is set by the chart (keys: clientKeys.*, redis: redis.*, the RunPod key: runpod.*); remove it" $key) -}}
{{- end -}}
{{- end -}}
{{- $sources := 0 -}}
{{- range $v := list .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret -}}
{{- if $v }}{{ $sources = add1 $sources }}{{ end -}}
{{- end -}}
{{- if gt $sources 1 -}}
{{- fail "redis: choose one of redis.enabled (the bundled subchart), redis.url and redis.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/*
podgate.toml from a map: podgate.toml's own key names, rendered by podgate.tomlDocument.
The chart adds what it owns: [server] drain_s, keys_file, [redis] url (the subchart's).
*/}}
{{- define "podgate.settings" -}}
{{- $doc := deepCopy (.Values.config | default dict) -}}
{{- $server := $doc.server | default dict -}}
{{- $_ := set $server "drain_s" .Values.shutdown.drainSeconds -}}
{{- $_ := set $doc "server" $server -}}
{{- if or .Values.clientKeys.existingSecret .Values.clientKeys.keys -}}
{{- $_ := set $doc "keys_file" (include "podgate.keysPath" .) -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $_ := set $doc "redis" (dict "url" (include "podgate.redisSubchartUrl" .)) -}}
{{- end -}}
{{- /* RunPod's per-endpoint limits are shared by the replicas: each keeps its share (the most
       replicas there may be), unless config.budgets.replicas says otherwise */ -}}
{{- $budgets := $doc.budgets | default dict -}}
{{- if not (hasKey $budgets "replicas") -}}
{{- $_ := set $budgets "replicas" (ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled) -}}
{{- end -}}
{{- $_ := set $doc "budgets" $budgets -}}
{{- include "podgate.tomlDocument" (list $doc "config.") | trim -}}
{{- end -}}

{{/*
A TOML document from a map whose values are scalars, lists of scalars, maps of those
([section]) or lists of such maps ([[array]]). A value goes through toJson: for these types
JSON's text is valid TOML (strings with JSON's escapes are TOML basic strings; whole numbers
come out as integers, which podgate's float settings accept too; lists are inline arrays).
Top-level scalars come first (TOML puts them before any table); null values are left out.
*/}}
{{- define "podgate.tomlDocument" -}}
{{- $doc := index . 0 -}}
{{- $prefix := index . 1 -}}
{{- range $key, $value := $doc }}
{{- if not (or (kindIs "map" $value) (include "podgate.tomlIsTableList" $value)) }}
{{- include "podgate.tomlPair" (list $key $value (print $prefix $key)) }}
{{- end }}
{{- end }}
{{- range $key, $value := $doc }}
{{- if kindIs "map" $value }}
{{- if $value }}

[{{ $key }}]
{{- range $k, $v := $value }}{{ include "podgate.tomlPair" (list $k $v (printf "%s%s.%s" $prefix $key $k)) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $value := $doc }}
{{- if include "podgate.tomlIsTableList" $value }}
{{- range $i, $entry := $value }}

[[{{ $key }}]]
{{- range $k, $v := $entry }}{{ include "podgate.tomlPair" (list $k $v (printf "%s%s[%d].%s" $prefix $key $i $k)) }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" for a non-empty list of maps (an array of tables). */}}
{{- define "podgate.tomlIsTableList" -}}
{{- if and (kindIs "slice" .) . -}}
{{- if kindIs "map" (first .) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* One `key = value` line from (list key value path); fails on a value TOML cannot hold here. */}}
{{- define "podgate.tomlPair" -}}
{{- $key := index . 0 -}}
{{- $value := index . 1 -}}
{{- $path := index . 2 -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" $key) -}}
{{- fail (printf "%s: not a podgate setting name" $path) -}}
{{- end -}}
{{- if kindIs "map" $value -}}
{{- fail (printf "%s: podgate's TOML has no tables at this depth" $path) -}}
{{- end -}}
{{- if kindIs "slice" $value -}}
{{- range $value -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) (kindIs "invalid" .) -}}
{{- fail (printf "%s: a list of plain values is expected here" $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end -}}
{{- end -}}

{{/*
The podgate container's environment: the RunPod key and the external Redis URL from their
Secrets (never a value in the pod spec), then extraEnv.
*/}}
{{- define "podgate.env" -}}
{{- $v := .Values -}}
{{- $runpod := include "podgate.secretRef" (list $v.runpod $v.runpod.apiKey "runpod-api-key" . "name") -}}
{{- $redis := include "podgate.secretRef" (list $v.redis $v.redis.url "redis-url" . "name") -}}
{{- if $runpod }}
- name: {{ include "podgate.apiKeyEnv" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $runpod }}
      key: {{ include "podgate.secretRef" (list $v.runpod $v.runpod.apiKey "runpod-api-key" . "key") }}
{{- end }}
{{- if $redis }}
# overrides [redis] url; from a Secret, so a password stays out of the ConfigMap
- name: PODGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $redis }}
      key: {{ include "podgate.secretRef" (list $v.redis $v.redis.url "redis-url" . "key") }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
