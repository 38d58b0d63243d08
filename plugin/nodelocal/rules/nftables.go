package rules

import (
	encbin "encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NftTable is the nftables table the plugin owns in ModeNftables.
const NftTable = "nodelocaldns"

// NftRule is one rule of the nftables rule set.
type NftRule struct {
	Addr    netip.Addr
	Src     bool   // match the source address and port (else the destination)
	Proto   string // udp or tcp
	Port    int
	Verdict string // notrack or accept
}

// String is the rule in nft syntax; it is also kept as the rule's user data,
// which is how Ensure compares what is there with what is wanted.
func (r NftRule) String() string {
	fam, dir := "ip", "d"
	if r.Addr.Is6() {
		fam = "ip6"
	}
	if r.Src {
		dir = "s"
	}
	return fmt.Sprintf("%s %saddr %s %s %sport %d counter %s", fam, dir, r.Addr, r.Proto, dir, r.Port, r.Verdict)
}

// NftChain is a base chain of the plugin's table.
type NftChain struct {
	Name     string
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	Rules    []NftRule
}

// RenderNft returns the chains of table inet nodelocaldns: the same matches
// as the iptables rules, NOTRACK at raw priority (-300), ACCEPT at filter
// priority (0).
func RenderNft(spec Spec) []NftChain {
	pre := NftChain{Name: "raw-prerouting", Hook: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw}
	out := NftChain{Name: "raw-output", Hook: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw}
	in := NftChain{Name: "filter-input", Hook: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter}
	fout := NftChain{Name: "filter-output", Hook: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter}
	// One family after the other, as the iptables rendering does.
	for _, ipv6 := range []bool{false, true} {
		for _, t := range Render(spec, ipv6) {
			for _, c := range t.Chains {
				for _, r := range c.Rules {
					nr := parseRendered(r)
					switch {
					case t.Name == "raw" && c.Builtin == "PREROUTING":
						pre.Rules = append(pre.Rules, nr)
					case t.Name == "raw":
						out.Rules = append(out.Rules, nr)
					case c.Builtin == "INPUT":
						in.Rules = append(in.Rules, nr)
					default:
						fout.Rules = append(fout.Rules, nr)
					}
				}
			}
		}
	}
	return []NftChain{pre, out, in, fout}
}

// parseRendered turns one rendered iptables rule back into its parts, so
// both modes share one definition of the rule set.
func parseRendered(r string) NftRule {
	f := strings.Fields(r)
	var nr NftRule
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "-s", "-d":
			nr.Src = f[i] == "-s"
			nr.Addr = netip.MustParsePrefix(f[i+1]).Addr()
		case "-p":
			nr.Proto = f[i+1]
		case "--sport", "--dport":
			fmt.Sscan(f[i+1], &nr.Port)
		case "-j":
			nr.Verdict = strings.ToLower(f[i+1])
		}
	}
	return nr
}

// exprs compiles a rule for the inet family.
func (r NftRule) exprs() []expr.Any {
	nfproto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4) // IPv4 daddr
	if r.Addr.Is6() {
		nfproto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	if r.Src {
		off -= n // saddr sits right before daddr in both headers
	}
	l4 := byte(unix.IPPROTO_UDP)
	if r.Proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	portOff := uint32(2)
	if r.Src {
		portOff = 0
	}
	port := encbin.BigEndian.AppendUint16(nil, uint16(r.Port))
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.Addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Counter{},
	}
	if r.Verdict == "notrack" {
		return append(e, &expr.Notrack{})
	}
	return append(e, &expr.Verdict{Kind: expr.VerdictAccept})
}

// nftConn opens a netlink connection in the calling thread's namespace.
var nftConn = func() (*nftables.Conn, error) { return nftables.New() }

// ensureNft makes table inet nodelocaldns hold exactly the rendered chains.
// What is there is compared by chain and by each rule's user data; on any
// difference the whole table is replaced in one netlink transaction.
func ensureNft(spec Spec) ([]string, error) {
	want := RenderNft(spec)
	c, err := nftConn()
	if err != nil {
		return nil, nftErr("open nftables netlink connection", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable}
	have, exists, err := readNft(c, table)
	if err != nil {
		return nil, err
	}
	var changes []string
	if !exists {
		changes = append(changes, fmt.Sprintf("table inet %s created (%d chains)", NftTable, len(want)))
	} else {
		for _, ch := range want {
			got, ok := have[ch.Name]
			wantText := make([]string, len(ch.Rules))
			for i, r := range ch.Rules {
				wantText[i] = r.String()
			}
			switch {
			case !ok:
				changes = append(changes, fmt.Sprintf("chain %s created in table inet %s", ch.Name, NftTable))
			case !slices.Equal(got, wantText):
				missing, extra := diff(wantText, got)
				changes = append(changes, fmt.Sprintf("chain %s rewritten in table inet %s (%d rules missing, %d unexpected)", ch.Name, NftTable, missing, extra))
			}
		}
		if len(have) != len(want) && len(changes) == 0 {
			changes = append(changes, fmt.Sprintf("table inet %s rewritten (unexpected chains)", NftTable))
		}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if exists {
		c.DelTable(table)
	}
	c.AddTable(table)
	accept := nftables.ChainPolicyAccept
	for _, ch := range want {
		chain := c.AddChain(&nftables.Chain{Name: ch.Name, Table: table, Type: nftables.ChainTypeFilter, Hooknum: ch.Hook, Priority: ch.Priority, Policy: &accept})
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r.exprs(), UserData: []byte(r.String())})
		}
	}
	if err := c.Flush(); err != nil {
		return nil, nftErr("write table inet "+NftTable, err)
	}
	return changes, nil
}

// readNft returns the rules' user data by chain of the plugin's table.
func readNft(c *nftables.Conn, table *nftables.Table) (map[string][]string, bool, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, false, nftErr("list nftables chains", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, false, nftErr("list nftables tables", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == NftTable }) {
		return nil, false, nil
	}
	have := map[string][]string{}
	for _, ch := range chains {
		if ch.Table.Name != NftTable {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return nil, true, nftErr("list rules of chain "+ch.Name, err)
		}
		have[ch.Name] = []string{}
		for _, r := range rules {
			have[ch.Name] = append(have[ch.Name], string(r.UserData))
		}
	}
	return have, true, nil
}

// removeNft deletes the plugin's table; a missing one is not an error.
func removeNft() error {
	c, err := nftConn()
	if err != nil {
		return nftErr("open nftables netlink connection", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nftErr("list nftables tables", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == NftTable }) {
		return nil
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return nftErr("delete table inet "+NftTable, err)
	}
	return nil
}

func nftErr(op string, err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: operation not permitted: need CAP_NET_ADMIN: %w", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
