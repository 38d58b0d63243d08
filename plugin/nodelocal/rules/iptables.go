package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/coreos/go-iptables/iptables"
)

var log = clog.NewWithPlugin("nodelocal")

// Manager applies the rule set with iptables-restore and reads it back with
// iptables-save. go-iptables has no restore, and rule-by-rule -C/-I/-D calls
// are neither atomic nor cheap, so the rule work execs the restore and save
// binaries; go-iptables checks the binaries' version (for the -w form).
type Manager struct {
	wait   time.Duration
	prefix []string
	env    []string

	mu       sync.Mutex
	resolved map[Backend]Backend // what auto (or a fixed backend) became
	waitArgv map[string][]string // -w form by restore binary
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

// New returns a Manager.
func New(opts ...Option) *Manager {
	m := &Manager{wait: 5 * time.Second, resolved: map[Backend]Backend{}, waitArgv: map[string][]string{}}
	for _, o := range opts {
		o(m)
	}
	return m
}

// family is one of iptables or ip6tables.
type family struct {
	name string // iptables or ip6tables
	ipv6 bool
}

var families = []family{{"iptables", false}, {"ip6tables", true}}

// binary names the backend's command of a family: kind is "", "save" or "restore".
func binary(f family, b Backend, kind string) string {
	n := f.name + "-" + string(b)
	if kind != "" {
		n += "-" + kind
	}
	return n
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
		if len(Render(spec, f.ipv6)) == 0 && f.ipv6 {
			continue // no IPv6 local IP: ip6tables is not needed
		}
		for _, kind := range []string{"", "save", "restore"} {
			if _, err := exec.LookPath(binary(f, b, kind)); err != nil {
				return fmt.Errorf("%s not found in PATH: install the iptables package", binary(f, b, kind))
			}
		}
	}
	return nil
}

// Ensure makes the plugin's chains hold exactly the rendered rules and each
// built-in chain jump to them once. Only what differs from iptables-save's
// view is sent, in one iptables-restore --noflush per family; a steady state
// sends nothing. Families without a local IP are cleaned of the plugin's
// chains.
func (m *Manager) Ensure(spec Spec) ([]string, error) {
	switch spec.Mode {
	case ModeNone:
		return nil, nil
	case ModeNftables:
		return ensureNft(spec)
	case ModeIptables:
	default:
		return nil, fmt.Errorf("unknown rules mode %q", spec.Mode)
	}
	b, err := m.backend(spec.Backend)
	if err != nil {
		return nil, err
	}
	var changes []string
	for _, f := range families {
		want := Render(spec, f.ipv6)
		if want == nil {
			if _, err := exec.LookPath(binary(f, b, "save")); err != nil {
				continue // nothing can be there
			}
			removed, err := m.remove(f, b, ownChains)
			for _, c := range removed {
				changes = append(changes, fmt.Sprintf("chain %s removed: no %s local IP", c, f.name))
			}
			if err != nil {
				return changes, err
			}
			continue
		}
		c, err := m.ensureFamily(f, b, want)
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

func (m *Manager) ensureFamily(f family, b Backend, want []Table) ([]string, error) {
	var changes []string
	var input restoreInput
	for _, t := range want {
		cur, err := m.save(f, b, t.Name)
		if err != nil {
			return nil, err
		}
		where := fmt.Sprintf("%s %s", binary(f, b, ""), t.Name)
		var decl, body, jumps []string
		for _, c := range t.Chains {
			have, exists := cur.chains[c.Name]
			switch {
			case !exists:
				changes = append(changes, fmt.Sprintf("chain %s created in %s (%d rules)", c.Name, where, len(c.Rules)))
			case !slices.Equal(have, c.Rules):
				missing, extra := diff(c.Rules, have)
				changes = append(changes, fmt.Sprintf("chain %s rewritten in %s (%d rules missing, %d unexpected)", c.Name, where, missing, extra))
			default:
				continue
			}
			// Under --noflush a declared chain is flushed (or created), then rewritten.
			decl = append(decl, fmt.Sprintf(":%s - [0:0]", c.Name))
			body = append(body, c.Rules...)
		}
		for _, c := range t.Chains {
			switch n := count(cur.chains[c.Builtin], c.Jump()); {
			case n == 0:
				jumps = append(jumps, insertJump(c))
				changes = append(changes, fmt.Sprintf("jump %s -> %s added in %s", c.Builtin, c.Name, where))
			case n > 1:
				// -D takes the first match: drop them all, put one back on top.
				for range n {
					jumps = append(jumps, "-D"+strings.TrimPrefix(c.Jump(), "-A"))
				}
				jumps = append(jumps, insertJump(c))
				changes = append(changes, fmt.Sprintf("jump %s -> %s duplicates removed in %s (%d)", c.Builtin, c.Name, where, n-1))
			}
		}
		if len(decl)+len(jumps) == 0 {
			continue
		}
		input.table(t.Name, slices.Concat(decl, body, jumps))
	}
	if err := input.apply(m, f, b); err != nil {
		return nil, err
	}
	return changes, nil
}

// restoreInput collects the tables of one iptables-restore --noflush run.
type restoreInput struct{ strings.Builder }

func (in *restoreInput) table(name string, lines []string) {
	in.WriteString("*" + name + "\n")
	for _, l := range lines {
		in.WriteString(l + "\n")
	}
	in.WriteString("COMMIT\n")
}

// apply runs the restore, unless no table was added.
func (in *restoreInput) apply(m *Manager, f family, b Backend) error {
	if in.Len() == 0 {
		return nil
	}
	return m.restore(f, b, in.String())
}

// Remove deletes the jumps and the plugin's chains from raw and filter, for
// both families, in the backend spec resolves to (in ModeNftables: the
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

// removeFamilies runs remove for the given chains in both families. A
// family whose iptables binaries are missing is skipped, or an error when
// needed says the spec has rules in it.
func (m *Manager) removeFamilies(b Backend, tables []Table, needed func(family) bool) error {
	var errs []error
	for _, f := range families {
		if _, err := exec.LookPath(binary(f, b, "save")); err != nil {
			if needed(f) {
				errs = append(errs, fmt.Errorf("%s not found in PATH: install the iptables package", binary(f, b, "save")))
			}
			continue
		}
		if _, err := m.remove(f, b, tables); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// remove takes the jumps to the given chains, and the chains, out of one
// family and returns the chains it deleted.
func (m *Manager) remove(f family, b Backend, tables []Table) ([]string, error) {
	var removed []string
	var input restoreInput
	for _, t := range tables {
		cur, err := m.save(f, b, t.Name)
		if err != nil {
			return nil, err
		}
		var decl, dels []string
		for _, c := range t.Chains {
			for range count(cur.chains[c.Builtin], c.Jump()) {
				dels = append(dels, "-D"+strings.TrimPrefix(c.Jump(), "-A"))
			}
		}
		for _, c := range t.Chains {
			if _, ok := cur.chains[c.Name]; ok {
				decl = append(decl, fmt.Sprintf(":%s - [0:0]", c.Name))
				dels = append(dels, "-X "+c.Name)
				removed = append(removed, fmt.Sprintf("%s in %s %s", c.Name, binary(f, b, ""), t.Name))
			}
		}
		if len(dels) == 0 {
			continue
		}
		input.table(t.Name, slices.Concat(decl, dels))
	}
	if err := input.apply(m, f, b); err != nil {
		return nil, err
	}
	return removed, nil
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
	for _, b := range []Backend{BackendNft, BackendLegacy} {
		var all strings.Builder
		for _, f := range families {
			if _, err := exec.LookPath(binary(f, b, "save")); err != nil {
				continue
			}
			out, err := m.run("", binary(f, b, "save"))
			if err != nil {
				log.Debugf("backend detection: %v", err)
			}
			all.WriteString(out)
		}
		dump[b] = all.String()
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

// saved is one table as iptables-save prints it: chain name to its rules.
type saved struct {
	chains map[string][]string
}

func (m *Manager) save(f family, b Backend, table string) (saved, error) {
	out, err := m.run("", binary(f, b, "save"), "-t", table)
	if err != nil {
		return saved{}, fmt.Errorf("read %s table: %w", table, err)
	}
	return parseSave(out), nil
}

// parseSave reads iptables-save output of one table.
func parseSave(out string) saved {
	s := saved{chains: map[string][]string{}}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if _, ok := s.chains[name]; !ok {
				s.chains[name] = []string{}
			}
		case strings.HasPrefix(l, "-A "):
			name, _, _ := strings.Cut(l[3:], " ")
			s.chains[name] = append(s.chains[name], l)
		}
	}
	return s
}

func (m *Manager) restore(f family, b Backend, input string) error {
	m.mu.Lock()
	w, ok := m.waitArgv[binary(f, b, "restore")]
	if !ok {
		w = m.waitArgs(f, b)
		m.waitArgv[binary(f, b, "restore")] = w
	}
	m.mu.Unlock()
	args := append([]string{"--noflush"}, w...)
	_, err := m.run(input, binary(f, b, "restore"), args...)
	if err != nil {
		return fmt.Errorf("apply rules: %w", err)
	}
	return nil
}

// waitArgs returns the -w form the installed iptables supports: restore
// takes -w SECONDS since 1.6.2; older ones have no lock wait at all.
func (m *Manager) waitArgs(f family, b Backend) []string {
	secs := int((m.wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	path, err := exec.LookPath(binary(f, b, ""))
	if err != nil {
		return []string{"-w", fmt.Sprint(secs)}
	}
	proto := iptables.ProtocolIPv4
	if f.ipv6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.Path(path), iptables.IPFamily(proto))
	if err != nil {
		return []string{"-w", fmt.Sprint(secs)}
	}
	if v1, v2, v3 := ipt.GetIptablesVersion(); v1 < 1 || (v1 == 1 && (v2 < 6 || (v2 == 6 && v3 < 2))) {
		return nil
	}
	return []string{"-w", fmt.Sprint(secs)}
}

// run execs one command (through the prefix, with the extra environment),
// bounded in time, and returns its stdout.
func (m *Manager) run(stdin, name string, args ...string) (string, error) {
	argv := slices.Concat(m.prefix, []string{name}, args)
	ctx, cancel := context.WithTimeout(context.Background(), m.wait+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if len(m.env) > 0 {
		cmd.Env = append(cmd.Environ(), m.env...)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	msg := strings.TrimSpace(errb.String())
	var ee *exec.ExitError
	// Exit status 4 is iptables' RESOURCE_PROBLEM, which the lock is one of.
	if errors.As(err, &ee) && ee.ExitCode() == 4 && (msg == "" || strings.Contains(msg, "lock")) || strings.Contains(msg, "holding the xtables lock") {
		return "", fmt.Errorf("%w: %s: %s", ErrLocked, name, msg)
	}
	if strings.Contains(msg, "Permission denied") || strings.Contains(msg, "Operation not permitted") {
		return "", fmt.Errorf("%s: operation not permitted: need CAP_NET_ADMIN: %s", name, msg)
	}
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("%s not found in PATH: install the iptables package", name)
	}
	if msg != "" {
		return "", fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return "", fmt.Errorf("%s: %w", name, err)
}

func count(rules []string, r string) int {
	n := 0
	for _, x := range rules {
		if x == r {
			n++
		}
	}
	return n
}

// diff counts the wanted rules that are missing and the rules that are there
// but not wanted (duplicates count).
func diff(want, have []string) (missing, extra int) {
	left := map[string]int{}
	for _, r := range have {
		left[r]++
	}
	for _, r := range want {
		if left[r] > 0 {
			left[r]--
		} else {
			missing++
		}
	}
	for _, n := range left {
		extra += n
	}
	return missing, extra
}
