package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	clog "github.com/coredns/coredns/plugin/pkg/log"
)

var log = clog.NewWithPlugin("nodelocal")

// Manager applies the rule set with iptables-restore and reads it back with
// iptables-save, through a Runner per family and backend. go-iptables has no
// restore, and rule-by-rule -C/-I/-D calls are neither atomic nor cheap, so
// the real runner execs the restore and save binaries; go-iptables checks
// the binaries' version (for the -w form).
type Manager struct {
	wait      time.Duration
	prefix    []string
	env       []string
	newRunner func(ipv6 bool, b Backend) Runner

	mu       sync.Mutex
	resolved map[Backend]Backend // what auto (or a fixed backend) became
	waitArgv map[string][]string // -w form by restore binary
	natUsed  map[string]bool     // by runner: the last Ensure wrote the nat table
	socket   map[string]error    // socket probe result by mode/backend
}

// Option configures a Manager.
type Option func(*Manager)

// WithWait sets how long iptables-restore waits for the xtables lock (-w).
func WithWait(d time.Duration) Option { return func(m *Manager) { m.wait = d } }

// WithCommandPrefix runs every iptables command through a prefix, e.g.
// "ip netns exec NAME" in tests.
func WithCommandPrefix(prefix ...string) Option {
	return func(m *Manager) { m.prefix = slices.Clone(prefix) }
}

// WithEnv adds environment variables (KEY=value) to every iptables command,
// e.g. XTABLES_LOCKFILE.
func WithEnv(env ...string) Option { return func(m *Manager) { m.env = slices.Clone(env) } }

// WithRunner replaces the iptables binaries with the given runners, one per
// family (ipv6 or not) and backend, e.g. fakes in tests.
func WithRunner(r func(ipv6 bool, b Backend) Runner) Option {
	return func(m *Manager) { m.newRunner = r }
}

// New returns a Manager.
func New(opts ...Option) *Manager {
	m := &Manager{
		wait:     5 * time.Second,
		resolved: map[Backend]Backend{},
		waitArgv: map[string][]string{},
		natUsed:  map[string]bool{},
		socket:   map[string]error{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// runner returns the Runner of a family and backend.
func (m *Manager) runner(f family, b Backend) Runner {
	if m.newRunner != nil {
		return m.newRunner(f.ipv6, b)
	}
	return execRunner{m: m, f: f, b: b}
}

// Check fails when a binary the spec needs is missing from PATH, naming it.
// With BackendAuto both backends' binaries are looked for, and one complete
// set is enough.
func Check(spec Spec) error {
	if spec.Mode != ModeIptables {
		return nil
	}
	backends := []Backend{spec.Backend}
	if spec.Backend == BackendAuto {
		backends = []Backend{BackendNft, BackendLegacy}
	}
	var errs []error
	for _, b := range backends {
		err := checkBackend(spec, b)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkBackend(spec Spec, b Backend) error {
	for _, f := range families {
		if f.ipv6 && len(Render(spec, true)) == 0 {
			continue // no IPv6 local IP: ip6tables is not needed
		}
		if err := (execRunner{f: f, b: b}).Present(); err != nil {
			return err
		}
	}
	return nil
}

// Ensure makes the plugin's chains hold exactly the rendered rules and each
// built-in chain jump to them once. Only what differs from iptables-save's
// view is sent, in one iptables-restore --noflush per family; a steady state
// sends nothing. Families without a local IP are cleaned of the plugin's
// chains. With Spec.Guard on a kernel without the socket match, the rules
// go in unguarded (SocketMatch says so, and the Manager logs it once).
func (m *Manager) Ensure(spec Spec) ([]string, error) {
	switch spec.Mode {
	case ModeNone:
		return nil, nil
	case ModeNftables, ModeIptables:
	default:
		return nil, fmt.Errorf("unknown rules mode %q", spec.Mode)
	}
	if spec.Guard {
		switch err := m.SocketMatch(spec); {
		case errors.Is(err, ErrNoSocketMatch):
			spec.Guard = false
		case err != nil:
			return nil, err
		}
	}
	if spec.Mode == ModeNftables {
		return ensureNft(spec)
	}
	b, err := m.backend(spec.Backend)
	if err != nil {
		return nil, err
	}
	var changes []string
	for _, f := range families {
		r := m.runner(f, b)
		want := Render(spec, f.ipv6)
		if want == nil && r.Present() != nil {
			continue // nothing can be there
		}
		c, err := m.apply(r, m.ownTables(r, want), want, spec.Upstream)
		for _, c := range c {
			if want == nil {
				c += fmt.Sprintf(": no %s local IP", f.name)
			}
			changes = append(changes, c)
		}
		if err != nil {
			return changes, err
		}
		m.mu.Lock()
		m.natUsed[r.Name()] = slices.ContainsFunc(want, func(t Table) bool { return t.Name == "nat" })
		m.mu.Unlock()
	}
	return changes, nil
}

// ownTables are the tables Ensure compares for r: raw and filter, and nat
// only when want has a chain there or the last Ensure had (it holds
// kube-proxy's Services: large, and read only when needed).
func (m *Manager) ownTables(r Runner, want []Table) []Table {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.natUsed[r.Name()] || slices.ContainsFunc(want, func(t Table) bool { return t.Name == "nat" }) {
		return ownChains
	}
	return ownChains[:2]
}

// apply reads the tables of own, plans what makes the chains of own hold
// exactly want, and restores it in one run. DNATs to upstream port 53 in
// nat become jumps to kube-proxy's Service chain when it has one.
func (m *Manager) apply(r Runner, own, want []Table, upstream netip.Addr) ([]string, error) {
	cur := map[string]saved{}
	for _, t := range own {
		out, err := r.Save(t.Name)
		if err != nil {
			return nil, fmt.Errorf("read %s table with %s: %w", t.Name, r.Name(), err)
		}
		cur[t.Name] = parseSave(out)
	}
	if nat, ok := cur["nat"]; ok && upstream.IsValid() {
		want = useServiceChains(want, nat, upstream.Unmap())
	}
	changes, input := plan(own, want, cur, r.Name())
	if input == "" {
		return nil, nil
	}
	if err := r.Restore(input); err != nil {
		return nil, fmt.Errorf("apply rules with %s: %w", r.Name(), err)
	}
	return changes, nil
}

// useServiceChains returns want with each DNAT to upstream:53 replaced by
// a jump to kube-proxy's KUBE-SVC chain for that protocol, if nat has one:
// a DNAT to the ClusterIP would end nat processing before kube-proxy's own
// DNAT, leaving the packet addressed to a ClusterIP nobody holds (iptables
// mode), while the jump load-balances as kube-proxy would.
func useServiceChains(want []Table, nat saved, upstream netip.Addr) []Table {
	svc := kubeServiceChains(nat, upstream)
	if len(svc) == 0 {
		return want
	}
	to := netip.AddrPortFrom(upstream, upstreamPort)
	out := slices.Clone(want)
	for i, t := range out {
		if t.Name != "nat" {
			continue
		}
		t.Chains = slices.Clone(t.Chains)
		for j, c := range t.Chains {
			c.Rules = slices.Clone(c.Rules)
			for k, r := range c.Rules {
				if r.Target == TargetDNAT && r.To == to && svc[r.Proto] != "" {
					c.Rules[k].Target, c.Rules[k].To = Target(svc[r.Proto]), netip.AddrPort{}
				}
			}
			t.Chains[j] = c
		}
		out[i] = t
	}
	return out
}

// kubeServiceChains finds kube-proxy's KUBE-SVC chains for upstream:53 in a
// saved nat table, by protocol.
func kubeServiceChains(nat saved, upstream netip.Addr) map[string]string {
	dst := host(upstream)
	found := map[string]string{}
	for _, r := range nat.chains["KUBE-SERVICES"] {
		f := strings.Fields(r)
		var d, proto, dport, jump string
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "-d":
				d = f[i+1]
			case "-p":
				proto = f[i+1]
			case "--dport":
				dport = f[i+1]
			case "-j":
				jump = f[i+1]
			}
		}
		if d == dst && dport == fmt.Sprint(upstreamPort) && strings.HasPrefix(jump, "KUBE-SVC-") && found[proto] == "" {
			found[proto] = jump
		}
	}
	return found
}

// Remove deletes the jumps and the plugin's chains from raw, filter and nat,
// for both families, in the backend spec resolves to (in ModeNftables: the
// plugin's table). What is not there is not an error.
func (m *Manager) Remove(spec Spec) error {
	switch spec.Mode {
	case ModeNftables:
		return removeNft()
	case ModeIptables:
	default:
		return nil
	}
	b, err := m.backend(spec.Backend)
	if err != nil {
		return err
	}
	return m.removeFamilies(b, ownChains, func(f family) bool { return len(Render(spec, f.ipv6)) > 0 })
}

// removeFamilies removes the given chains from both families. A family
// whose iptables binaries are missing is skipped, or an error when needed
// says the spec has rules in it.
func (m *Manager) removeFamilies(b Backend, tables []Table, needed func(family) bool) error {
	var errs []error
	for _, f := range families {
		r := m.runner(f, b)
		if err := r.Present(); err != nil {
			if needed(f) {
				errs = append(errs, err)
			}
			continue
		}
		if _, err := m.apply(r, tables, nil, netip.Addr{}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// backend resolves BackendAuto once per Manager and logs the choice.
func (m *Manager) backend(want Backend) (Backend, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.resolved[want]; ok {
		return b, nil
	}
	var b Backend
	switch want {
	case BackendLegacy, BackendNft:
		b = want
	case BackendAuto, "":
		var why string
		b, why = m.detect()
		log.Infof("iptables backend %s (auto: %s)", b, why)
	default:
		return "", fmt.Errorf("unknown iptables backend %q", want)
	}
	m.resolved[want] = b
	return b, nil
}

// detect picks the backend the node's kube-proxy and kubelet use, as
// kubernetes-sigs/iptables-wrappers does: a kubelet hint chain first
// (KUBE-IPTABLES-HINT, then KUBE-KUBELET-CANARY), else whichever backend
// holds more KUBE- rules; nft (Debian's default) when neither has any.
func (m *Manager) detect() (Backend, string) {
	dump := map[Backend]string{}
	// A backend whose rules cannot be read (iptables-legacy-save needs
	// CAP_NET_RAW) counts as empty, which can pick the wrong one: say so.
	var unread []string
	for _, b := range []Backend{BackendNft, BackendLegacy} {
		var all strings.Builder
		for _, f := range families {
			r := m.runner(f, b)
			if r.Present() != nil {
				continue
			}
			out, err := r.Save("")
			if err != nil {
				unread = append(unread, fmt.Sprintf("%s: %v", r.Name(), err))
			}
			all.WriteString(out)
		}
		dump[b] = all.String()
	}
	if len(unread) > 0 {
		log.Warningf("Choosing the iptables backend without reading every rule set (%s): the choice may not be kube-proxy's; grant CAP_NET_RAW or set `rules iptables legacy|nft`", strings.Join(unread, "; "))
	}
	for _, hint := range []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"} {
		for _, b := range []Backend{BackendNft, BackendLegacy} {
			if strings.Contains(dump[b], ":"+hint+" ") {
				return b, "chain " + hint + " found in " + string(b)
			}
		}
	}
	n := map[Backend]int{}
	for b, d := range dump {
		for _, l := range strings.Split(d, "\n") {
			if strings.HasPrefix(l, "-") && strings.Contains(l, "KUBE-") {
				n[b]++
			}
		}
	}
	why := fmt.Sprintf("%d KUBE- rules in legacy, %d in nft", n[BackendLegacy], n[BackendNft])
	if n[BackendLegacy] > n[BackendNft] {
		return BackendLegacy, why
	}
	return BackendNft, why
}
