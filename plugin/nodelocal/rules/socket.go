package rules

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
)

// chainProbe is the chain SocketMatch writes and deletes again.
const chainProbe = "NODELOCALDNS-PROBE"

// SocketMatch tells whether the kernel has the socket match Spec.Guard
// needs, in the spec's mode and backend: nil when it has, an error wrapping
// ErrNoSocketMatch when it has not (logged once), another error when the
// probe could not run (e.g. ErrLocked; it is tried again next time). The
// answer is kept for the Manager's life. The probe leaves nothing behind:
// iptables gets a chain no built-in chain jumps to, deleted right after;
// nftables a table added and deleted in one transaction.
func (m *Manager) SocketMatch(spec Spec) error {
	key := string(spec.Mode)
	var probe func() error
	switch spec.Mode {
	case ModeNftables:
		probe = probeNft
	case ModeIptables:
		b, err := m.backend(spec.Backend)
		if err != nil {
			return err
		}
		key += "/" + string(b)
		f := families[0]
		if len(Render(spec, false)) == 0 && len(Render(spec, true)) > 0 {
			f = families[1]
		}
		probe = func() error { return probeIptables(m.runner(f, b)) }
	default:
		return nil
	}
	m.mu.Lock()
	err, done := m.socket[key]
	m.mu.Unlock()
	if done {
		return err
	}
	err = probe()
	if err != nil && !errors.Is(err, ErrNoSocketMatch) {
		return err
	}
	if err != nil {
		log.Warningf("No fail-open guard: %v; DNS to the local IPs stays diverted to them while no cache runs", err)
	}
	m.mu.Lock()
	m.socket[key] = err
	m.mu.Unlock()
	return err
}

// probeIptables loads a socket match rule into a chain of its own in raw,
// then deletes the chain.
func probeIptables(r Runner) error {
	if err := r.Present(); err != nil {
		return err
	}
	rule := Rule{Proto: "udp", DPort: 53, Socket: true, Target: "RETURN"}
	in := fmt.Sprintf("*raw\n:%s - [0:0]\n%s\nCOMMIT\n", chainProbe, rule.Save(chainProbe))
	if err := r.Restore(in); err != nil {
		if errors.Is(err, ErrLocked) || strings.Contains(err.Error(), "operation not permitted") {
			return err
		}
		return fmt.Errorf("%w (%s: %v)", ErrNoSocketMatch, r.Name(), err)
	}
	if err := r.Restore(fmt.Sprintf("*raw\n:%s - [0:0]\n-X %s\nCOMMIT\n", chainProbe, chainProbe)); err != nil {
		return fmt.Errorf("delete probe chain %s with %s: %w", chainProbe, r.Name(), err)
	}
	return nil
}

// probeNft adds a table with a socket rule in a prerouting chain and deletes
// it in the same transaction, which the kernel rejects whole if it lacks
// the socket expression.
func probeNft() error {
	c, err := nftConn()
	if err != nil {
		return nftErr("open nftables netlink connection", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable + "-probe"}
	c.AddTable(table)
	base := nftBase("raw", "PREROUTING")
	base.Rules = []Rule{{Proto: "udp", DPort: 53, Socket: true, Target: TargetNotrack}}
	if err := addChains(c, table, []NftChain{base}); err != nil {
		return err
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%w (nftables socket expression: %v)", ErrNoSocketMatch, err)
	}
	return nil
}
