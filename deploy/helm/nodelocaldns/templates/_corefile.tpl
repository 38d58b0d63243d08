{{/*
The Corefile of each mode. With default values it is, comment lines aside, the
text of deploy/base/Corefile or deploy/overlays/<mode>/Corefile (the test in
deploy/ compares them). {$NAME} stays for CoreDNS to expand from the params
ConfigMap, as in the kustomize tree.
*/}}
{{/* serve_stale: verify waits 1s for the upstream, stale answers carry
RFC 8767's 30s TTL, a failed refresh is retried after 10s. */}}
{{- define "nodelocaldns.servestale" -}}
{{- $s := .Values.config.serveStale -}}
{{- if $s.enabled }}
        serve_stale {{ $s.duration }} {{ $s.mode }}{{ if eq $s.mode "verify" }} 1s{{ end }} 30s 10s
{{- end }}
{{- end -}}

{{/* prefetch: the cluster block always prefetches popular names (10 queries
a minute, the last 20% of the TTL) unless config.prefetch sets its own. */}}
{{- define "nodelocaldns.prefetch" -}}
{{- $p := .ctx.Values.config.prefetch -}}
{{- if $p.enabled }}
        prefetch {{ $p.amount }} {{ $p.duration }} {{ $p.percentage }}
{{- else if .cluster }}
        prefetch 10 1m 20%
{{- end }}
{{- end -}}

{{- define "nodelocaldns.cache30" -}}
{{- $c := .Values.config }}
    cache {{ $c.cacheTTL }} {
        success {$NODELOCAL_CACHE_OTHER}
        denial {$NODELOCAL_CACHE_OTHER}
{{- include "nodelocaldns.servestale" . }}
{{- include "nodelocaldns.prefetch" (dict "ctx" . "cluster" false) }}
    }
{{- end -}}

{{- define "nodelocaldns.upstream" }}
    forward . {$KUBE_DNS_UPSTREAM_SERVICE_HOST} {
        {{ .Values.config.commProtocol }}
        max_concurrent 1000
        failfast_all_unhealthy_upstreams
    }
{{- if .Values.config.noIPv6Lookups }}
    template IN AAAA {
        rcode NOERROR
    }
{{- end }}
{{- end -}}

{{- define "nodelocaldns.corefile" -}}
{{- $m := .Values.mode -}}
{{- $c := .Values.config -}}
{{- $ips := "{$LOCAL_DNS_IP} {$KUBE_DNS_IP}" -}}
{{- $rules := "iptables auto" -}}
{{- $iface := "nodelocaldns" -}}
{{- $teardown := "on" -}}
{{- $self := "{$LOCAL_DNS_IP}" -}}
{{- $lameduck := "5s" -}}
{{- if eq $m "ipvs" }}{{ $ips = "{$LOCAL_DNS_IP}" }}{{ $teardown = "handoff" }}{{ end -}}
{{- if eq $m "nftables" }}{{ $rules = "nftables" }}{{ end -}}
{{- if eq $m "dual-stack" }}{{ $ips = "{$LOCAL_DNS_IP} {$LOCAL_DNS_IP6} {$KUBE_DNS_IP} {$KUBE_DNS_IP6}" }}{{ end -}}
{{- if eq $m "cilium" }}{{ $ips = "{$POD_IP}" }}{{ $rules = "none" }}{{ $iface = "none" }}{{ $teardown = "off" }}{{ $self = "{$POD_IP}" }}{{ $lameduck = "10s" }}{{ end -}}
{{- if $c.skipTeardown }}{{ $teardown = "off" }}{{ end -}}
{$CLUSTER_DOMAIN}:53 {
{{- if $c.hitPath }}
    hitpath
{{- end }}
{{- if $c.enableLogging }}
    log
{{- end }}
    errors
    cache {
        success {$NODELOCAL_CACHE_SUCCESS} 30
        denial {$NODELOCAL_CACHE_DENIAL} 5
{{- include "nodelocaldns.servestale" . }}
{{- include "nodelocaldns.prefetch" (dict "ctx" . "cluster" true) }}
    }
    loop
    bind {{ $ips }}
    nodelocal {
        localip {{ $ips }}
        interface {{ $iface }}
        rules {{ $rules }}
        upstreamsvc kube-dns-upstream
        healthport {$HEALTH_PORT}
        sync 10s
        teardown {{ $teardown }}
{{- if eq $m "cilium" }}
        statedir none
{{- end }}
    }
{{- include "nodelocaldns.upstream" . }}
    prometheus :9253
    health {{ $self }}:{$HEALTH_PORT} {
        lameduck {{ $lameduck }}
    }
    ready {{ $self }}:{$READY_PORT}
}
{{- range list "in-addr.arpa" "ip6.arpa" }}
{{ . }}:53 {
{{- if $.Values.config.hitPath }}
    hitpath
{{- end }}
    errors
{{- include "nodelocaldns.cache30" $ }}
    loop
    bind {{ $ips }}
{{- include "nodelocaldns.upstream" $ }}
    prometheus :9253
}
{{- end }}
.:53 {
{{- if $c.hitPath }}
    hitpath
{{- end }}
{{- if $c.enableLogging }}
    log
{{- end }}
    errors
{{- include "nodelocaldns.cache30" . }}
    loop
    bind {{ $ips }}
    forward . /etc/resolv.conf {
        max_concurrent 1000
        failfast_all_unhealthy_upstreams
    }
    prometheus :9253
{{- if $c.noIPv6Lookups }}
    template IN AAAA {
        rcode NOERROR
    }
{{- end }}
}
{{- with $c.extraServerBlocks }}
{{ . }}
{{- end }}
{{- end -}}

{{/* node-cache's template (mode compat), as deploy/overlays/compat/Corefile.base. */}}
{{- define "nodelocaldns.corefile.compat" -}}
{$CLUSTER_DOMAIN}:53 {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    reload
    loop
    bind {$LOCAL_DNS_IP} {$KUBE_DNS_IP}
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus :9253
    health {$LOCAL_DNS_IP}:{$HEALTH_PORT}
}
{{- range list "in-addr.arpa" "ip6.arpa" }}
{{ . }}:53 {
    errors
    cache 30
    reload
    loop
    bind {$LOCAL_DNS_IP} {$KUBE_DNS_IP}
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus :9253
}
{{- end }}
.:53 {
    errors
    cache 30
    reload
    loop
    bind {$LOCAL_DNS_IP} {$KUBE_DNS_IP}
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
}
{{- end -}}
