{{/*
Checks what values.schema.json cannot say: settings that must agree with the mode,
and deliveryhero values whose meaning this chart does not have. Each failure names
the key.
*/}}
{{- define "nodelocaldns.validate" -}}
{{- $c := .Values.config -}}
{{- $cilium := eq .Values.mode "cilium" -}}
{{- range $k := list "setupInterface" "setupIptables" -}}
{{- if and (hasKey $c $k) (ne (get $c $k) (not $cilium)) -}}
{{- fail (printf "config.%s=%v does not fit mode %s: it must be %v there (or unset). A host-network cache needs its link and rules to receive pod DNS; the cache without them is mode cilium, where Cilium redirects to it" $k (get $c $k) $.Values.mode (not $cilium)) -}}
{{- end -}}
{{- end -}}
{{- if not $c.bindIp -}}
{{- fail "config.bindIp=false (bind 0.0.0.0) is not supported: on the host network it takes port 53 on every node address; the cache binds exactly its local IPs (config.bindIp: true)" -}}
{{- end -}}
{{- if and $c.customConfig (ne .Values.mode "compat") (contains "__PILLAR__" $c.customConfig) -}}
{{- fail (printf "config.customConfig uses node-cache's __PILLAR__ placeholders, which only mode compat renders (mode is %s)" .Values.mode) -}}
{{- end -}}
{{- if and (eq .Values.mode "compat") (or $c.extraServerBlocks $c.prefetch.enabled (not $c.serveStale.enabled) (ne $c.serveStale.mode "verify") (ne $c.serveStale.duration "1h") $c.enableLogging $c.noIPv6Lookups (ne $c.commProtocol "force_tcp") (ne (int $c.cacheTTL) 30)) -}}
{{- fail "mode compat runs node-cache's own Corefile template: change it with config.customConfig, not config.extraServerBlocks, prefetch, serveStale (the template loader adds serve_stale 1h verify itself), enableLogging, noIPv6Lookups, commProtocol or cacheTTL" -}}
{{- end -}}
{{- if and $c.skipTeardown $cilium -}}
{{- fail "config.skipTeardown: mode cilium sets nothing up on the node, so there is nothing to tear down; leave it false" -}}
{{- end -}}
{{- end -}}

{{/* The image, from image.repository and image.tag. */}}
{{- define "nodelocaldns.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}

{{/* Extra metadata merged into an object's own: (dict "own" map "extra" map). */}}
{{- define "nodelocaldns.merge" -}}
{{- toYaml (merge (deepCopy .own) .extra) -}}
{{- end -}}
