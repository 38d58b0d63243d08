{{/*
The Corefile of each mode. With default values it is, comment lines aside, the
text of deploy/base/Corefile or deploy/overlays/<mode>/Corefile (the test in
deploy/ compares them). {$NAME} stays for CoreDNS to expand from the params
ConfigMap, as in the kustomize tree.
*/}}
{{- define "nodelocaldns.cacheopts" -}}
{{- $c := .Values.config -}}
{{- if $c.prefetch.enabled }}
        prefetch {{ $c.prefetch.amount }} {{ $c.prefetch.duration }} {{ $c.prefetch.percentage }}
{{- end }}
{{- if $c.serveStale.enabled }}
        serve_stale {{ with $c.serveStale.duration }}{{ . }} {{ end }}{{ $c.serveStale.mode }}
{{- end }}
{{- end -}}

{{- define "nodelocaldns.cache30" -}}
{{- $c := .Values.config -}}
{{- if or $c.prefetch.enabled $c.serveStale.enabled }}
    cache {{ $c.cacheTTL }} {
{{- include "nodelocaldns.cacheopts" . }}
    }
{{- else }}
    cache {{ $c.cacheTTL }}
{{- end }}
{{- end -}}

{{- define "nodelocaldns.upstream" }}
    forward . {$KUBE_DNS_UPSTREAM_SERVICE_HOST} {
        {{ .Values.config.commProtocol }}
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
{{- if $c.enableLogging }}
    log
{{- end }}
    errors
    cache {
        success 9984 30
        denial 9984 5
{{- include "nodelocaldns.cacheopts" . }}
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
    errors
{{- include "nodelocaldns.cache30" $ }}
    loop
    bind {{ $ips }}
{{- include "nodelocaldns.upstream" $ }}
    prometheus :9253
}
{{- end }}
.:53 {
{{- if $c.enableLogging }}
    log
{{- end }}
    errors
{{- include "nodelocaldns.cache30" . }}
    loop
    bind {{ $ips }}
    forward . /etc/resolv.conf
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
