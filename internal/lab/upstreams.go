package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Service is a cluster Service the upstream CoreDNS answers for.
type Service struct {
	Name string // FQDN without the trailing dot
	IPv4 string
	IPv6 string
}

// Services are the cluster names the upstream CoreDNS pods serve, A, AAAA
// and PTR.
var Services = []Service{
	{"kubernetes.default.svc.cluster.local", "198.18.0.1", "2001:2::1"},
	{"kube-dns.kube-system.svc.cluster.local", KubeDNSIP, "2001:2::a"},
	{"kube-dns-upstream.kube-system.svc.cluster.local", KubeDNSUpIP, "2001:2::b"},
	{"web.default.svc.cluster.local", "198.18.0.20", "2001:2::14"},
	{"api.default.svc.cluster.local", "198.18.0.21", "2001:2::15"},
	{"db.default.svc.cluster.local", "198.18.0.22", "2001:2::16"},
	{"cache.default.svc.cluster.local", "198.18.0.23", "2001:2::17"},
	{"metrics-server.kube-system.svc.cluster.local", "198.18.0.30", "2001:2::1e"},
}

// hostsFile renders Services in /etc/hosts form for the hosts plugin, which
// also answers their PTR queries.
func hostsFile() string {
	var b strings.Builder
	for _, s := range Services {
		fmt.Fprintf(&b, "%s %s\n%s %s\n", s.IPv4, s.Name, s.IPv6, s.Name)
	}
	return b.String()
}

const soa = `"{{ .Zone }} 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"`

// upstreamCorefile is a "CoreDNS pod" of the cluster: cluster.local and the
// reverse zone from a hosts file (TTL 300, so the cache's hit path is not
// refresh-dominated), the SRV record and the WildDomain wildcard from
// templates, NXDOMAIN with a SOA
// for every other cluster name (the hosts plugin has no SOA, so it falls
// through to a catch-all template server), stub.test forwarded to its
// server as a kube-dns stubDomain would be, and the rest to the outside
// resolver. It listens on loopback only; dnsdelay serves the pod IP.
// withStub adds the stub domain's own server on StubIP.
func upstreamCorefile(hostsPath string, withStub bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `cluster.local:%[1]d in-addr.arpa:%[1]d ip6.arpa:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    errors
    template IN SRV cluster.local {
        match ^_http\._tcp\.web\.default\.svc\.cluster\.local\.$
        answer "{{ .Name }} %[4]d IN SRV 0 100 80 web.default.svc.cluster.local."
        additional "web.default.svc.cluster.local. %[4]d IN A 198.18.0.20"
        fallthrough
    }
    template IN A cluster.local {
        match ^[^.]+\.%[10]s\.$
        answer "{{ .Name }} %[4]d IN A %[11]s"
        fallthrough
    }
    template IN AAAA cluster.local {
        match ^[^.]+\.%[10]s\.$
        answer "{{ .Name }} %[4]d IN AAAA %[12]s"
        fallthrough
    }
    hosts %[3]s {
        ttl %[4]d
        reload 0
        fallthrough
    }
    forward . 127.0.0.1:%[5]d
}
%[6]s:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    forward . %[7]s
}
.:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    forward . %[8]s
}
.:%[5]d {
    bind 127.0.0.1
    template ANY ANY {
        rcode NXDOMAIN
        authority %[9]s
    }
}
`, upstreamPort, upstreamMetric, hostsPath, ClusterTTL, nxdomainPort, StubDomain, StubIP, OutsideIP, soa,
		strings.ReplaceAll(WildDomain, ".", `\.`), WildAddr, WildAddr6)
	if withStub {
		fmt.Fprintf(&b, `%[1]s:53 {
    bind %[2]s
    hosts {
        %[3]s %[4]s
        ttl %[5]d
    }
}
`, StubDomain, StubIP, StubAddr, StubName, ClusterTTL)
	}
	return b.String()
}

// outsideCorefile is the "internet": example.test and NXDOMAIN for the rest.
func outsideCorefile() string {
	return fmt.Sprintf(`example.test:53 {
    bind %[1]s
    prometheus %[1]s:9153
    hosts {
        %[2]s %[3]s
        2001:2:0:4::10 %[3]s
        ttl %[4]d
    }
}
.:53 {
    bind %[1]s
    prometheus %[1]s:9153
    template ANY ANY {
        rcode NXDOMAIN
        authority %[5]s
    }
}
`, OutsideIP, OutsideAddr, OutsideName, ClusterTTL, soa)
}

func (l *Lab) startUpstreams(ctx context.Context) error {
	hosts := filepath.Join(l.Dir, "cluster.hosts")
	if err := os.WriteFile(hosts, []byte(hostsFile()), 0o644); err != nil {
		return err
	}
	for _, u := range []struct {
		ns, ip string
		stub   bool
	}{{l.DNS1, DNS1IP, true}, {l.DNS2, DNS2IP, false}} {
		cf := filepath.Join(l.Dir, u.ns+".Corefile")
		if err := os.WriteFile(cf, []byte(upstreamCorefile(hosts, u.stub)), 0o644); err != nil {
			return err
		}
		if _, err := l.Start(ctx, u.ns, "coredns-"+u.ns, nil, l.Bin("coredns"), "-conf", cf); err != nil {
			return err
		}
		if _, err := l.Start(ctx, u.ns, "dnsdelay-"+u.ns, nil, l.Bin("dnsdelay"),
			"-listen", u.ip+":53", "-upstream", fmt.Sprintf("127.0.0.1:%d", upstreamPort),
			"-delay", l.cfg.Delay.String(), "-max-inflight", fmt.Sprint(l.cfg.Inflight), "-qps", fmt.Sprint(l.cfg.QPS)); err != nil {
			return err
		}
	}
	cf := filepath.Join(l.Dir, l.Net+".Corefile")
	if err := os.WriteFile(cf, []byte(outsideCorefile()), 0o644); err != nil {
		return err
	}
	_, err := l.Start(ctx, l.Net, "coredns-"+l.Net, nil, l.Bin("coredns"), "-conf", cf)
	return err
}

// waitUpstreams waits until each upstream answers through the node: both
// DNS pods directly, through the kube-dns Service, and the outside resolver.
func (l *Lab) waitUpstreams(ctx context.Context) error {
	checks := []struct{ server, name string }{
		{DNS1IP, Services[0].Name}, {DNS2IP, Services[0].Name}, {KubeDNSUpIP, Services[0].Name}, {OutsideIP, OutsideName}, {StubIP, StubName},
	}
	for _, c := range checks {
		if err := waitFor(ctx, 10*time.Second, func() error {
			_, err := Query(l.Node, c.server, c.name, "A", false)
			return err
		}); err != nil {
			return fmt.Errorf("upstream %s does not answer %s: %w (logs in %s)", c.server, c.name, err, l.Dir)
		}
	}
	return nil
}

// StopUpstreams stops the upstream DNS pods' servers (proxies and CoreDNS),
// as if every CoreDNS pod were gone.
func (l *Lab) StopUpstreams() error {
	var errs []error
	for _, p := range l.UpstreamProcs() {
		errs = append(errs, p.Stop(5*time.Second))
	}
	return errors.Join(errs...)
}

// UpstreamProcs are the running processes of the no-cache path: the
// upstream CoreDNS pods and their delaying proxies.
func (l *Lab) UpstreamProcs() []*Proc {
	var ps []*Proc
	for _, p := range l.procs {
		if !p.Exited() && (strings.HasSuffix(p.Name, l.DNS1) || strings.HasSuffix(p.Name, l.DNS2)) {
			ps = append(ps, p)
		}
	}
	return ps
}

// AddWildcardZone restarts the upstream CoreDNS pods with a wildcard zone
// in front of their catch-all NXDOMAIN server: every A query below zone is
// answered with addr, so unique names can fill a cache or measure the miss
// path through the whole upstream (cluster.local server, then its catch-all
// forward). It waits until both pods answer a name in it.
func (l *Lab) AddWildcardZone(ctx context.Context, zone, addr string) error {
	wildcard := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    template IN A %[2]s {
        answer "{{ .Name }} %[3]d IN A %[4]s"
    }
    template ANY ANY %[2]s {
        authority %[5]s
    }
`, nxdomainPort, zone, ClusterTTL, addr, soa)
	for _, ns := range []string{l.DNS1, l.DNS2} {
		cf := filepath.Join(l.Dir, ns+".Corefile")
		b, err := os.ReadFile(cf)
		if err != nil {
			return err
		}
		head := fmt.Sprintf(".:%d {\n    bind 127.0.0.1\n", nxdomainPort)
		if !strings.Contains(string(b), head) {
			return fmt.Errorf("%s has no catch-all server %q to put the zone %s in", cf, strings.TrimSpace(head), zone)
		}
		if err := os.WriteFile(cf, []byte(strings.Replace(string(b), head, wildcard, 1)), 0o644); err != nil {
			return err
		}
		for _, p := range l.procs {
			if p.Name == "coredns-"+ns {
				if err := p.Stop(5 * time.Second); err != nil {
					return err
				}
			}
		}
		if _, err := l.Start(ctx, ns, "coredns-"+ns, nil, l.Bin("coredns"), "-conf", cf); err != nil {
			return err
		}
	}
	for _, server := range []string{DNS1IP, DNS2IP} {
		if err := waitFor(ctx, 10*time.Second, func() error {
			r, err := Query(l.Node, server, "probe."+zone, "A", false)
			if err != nil {
				return err
			}
			if len(r.Answer) == 0 {
				return fmt.Errorf("no answer for probe.%s", zone)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("upstream %s with the wildcard zone %s: %w (logs in %s)", server, zone, err, l.Dir)
		}
	}
	return nil
}
