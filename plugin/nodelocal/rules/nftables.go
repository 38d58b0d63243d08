package rules

import (
	encbin "encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NftTable is the nftables table the plugin owns in ModeNftables.
const NftTable = "nodelocaldns"

// NftChain is a base chain of the plugin's table.
type NftChain struct {
	Name     string // e.g. raw-prerouting: the iptables table and built-in chain
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	Rules    []Rule
}

// nftBase maps an iptables table and built-in chain to the base chain that
// stands for them: same hook, the table's priority.
func nftBase(table, builtin string) NftChain {
	c := NftChain{Name: strings.ToLower(table + "-" + builtin), Type: nftables.ChainTypeFilter}
	switch table {
	case "raw":
		c.Priority = nftables.ChainPriorityRaw
	case "nat":
		c.Type, c.Priority = nftables.ChainTypeNAT, nftables.ChainPriorityNATDest
	default:
		c.Priority = nftables.ChainPriorityFilter
	}
	switch builtin {
	case "PREROUTING":
		c.Hook = nftables.ChainHookPrerouting
	case "INPUT":
		c.Hook = nftables.ChainHookInput
	default:
		c.Hook = nftables.ChainHookOutput
	}
	return c
}

// natFallbackPriority is the priority of the standing fallback's nat chain:
// after kube-proxy's DNAT (dstnat, -100, in iptables and nftables mode), so
// that a binding kube-proxy made stands (the first DNAT of a connection
// wins) and ours applies only where kube-proxy has none (IPVS mode).
var natFallbackPriority = nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest + 10)

// RenderNft returns the chains of table inet nodelocaldns: the rules Render
// gives for both families, each iptables chain as a base chain with the
// hook of its built-in chain and the priority of its table (raw -300,
// filter 0, nat -100; the fallback's nat chain -90).
//
// The standing fallback also gets a mangle-prerouting chain (-150, after
// conntrack has seen the packet's own destination, before any DNAT): a new
// connection to a fallback address that no cache socket took has its
// destination rewritten in place to the upstream ClusterIP. kube-proxy's
// DNAT of that ClusterIP then takes it, in nftables mode too, where a DNAT
// to the ClusterIP of ours would come first and leave the packet addressed
// to a ClusterIP nobody answers. Conntrack keeps the original destination,
// so the reply comes back from the address the pod asked.
func RenderNft(spec Spec) []NftChain {
	var chains []NftChain
	for _, ipv6 := range []bool{false, true} {
		for _, t := range Render(spec, ipv6) {
			for _, c := range t.Chains {
				b := nftBase(t.Name, c.Builtin)
				i := slices.IndexFunc(chains, func(x NftChain) bool { return x.Name == b.Name })
				if i < 0 {
					chains = append(chains, b)
					i = len(chains) - 1
				}
				chains[i].Rules = append(chains[i].Rules, c.Rules...)
			}
		}
	}
	var rewrite []Rule
	for i, c := range chains {
		if c.Type != nftables.ChainTypeNAT {
			continue
		}
		// The rewrite below sends the packet on with the upstream ClusterIP
		// as its destination: the DNAT matches that (once per protocol and
		// port), a no-op binding for a pod that asks the ClusterIP itself.
		chains[i].Priority = natFallbackPriority
		var nat []Rule
		for _, r := range c.Rules {
			if r.Target != TargetDNAT {
				nat = append(nat, r)
				continue
			}
			rw := r
			rw.Target = TargetSetDst
			rewrite = append(rewrite, rw)
			r.Dst = r.To.Addr()
			if !slices.Contains(nat, r) {
				nat = append(nat, r)
			}
		}
		chains[i].Rules = nat
	}
	if len(rewrite) > 0 {
		chains = append(chains, NftChain{Name: "mangle-prerouting", Type: nftables.ChainTypeFilter,
			Hook: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Rules: rewrite})
	}
	return chains
}

// Nft is the rule in nft syntax; it is also kept as the rule's user data,
// which is how Ensure compares what is there with what is wanted.
func (r Rule) Nft() string {
	var b strings.Builder
	if r.Src.IsValid() {
		fmt.Fprintf(&b, "%s saddr %s ", nftFamily(r.Src), r.Src)
	}
	if r.Dst.IsValid() {
		fmt.Fprintf(&b, "%s daddr %s ", nftFamily(r.Dst), r.Dst)
	}
	b.WriteString(r.Proto)
	if r.SPort > 0 {
		fmt.Fprintf(&b, " sport %d", r.SPort)
	}
	if r.DPort > 0 {
		fmt.Fprintf(&b, " dport %d", r.DPort)
	}
	if r.Socket {
		b.WriteString(" " + nftSocketMatch(r.Proto))
	}
	if r.Target == TargetSetDst {
		b.WriteString(" ct state new")
	}
	b.WriteString(" counter ")
	switch r.Target {
	case TargetNotrack, TargetAccept:
		b.WriteString(strings.ToLower(string(r.Target)))
	case TargetDNAT:
		fmt.Fprintf(&b, "dnat %s to %s", nftFamily(r.To.Addr()), r.To)
	case TargetSetDst:
		fmt.Fprintf(&b, "%s daddr set %s", nftFamily(r.To.Addr()), r.To.Addr())
	default:
		b.WriteString("jump " + string(r.Target))
	}
	return b.String()
}

// nftSocketMatch is the guard of a protocol's rules. UDP: `socket wildcard
// 0`, a socket bound to the address takes the packet. TCP: `socket
// transparent 0`, any socket takes it: nft's wildcard key answers only for
// full sockets and fails on a connection's request and TIME_WAIT sockets,
// so the handshake's last ACK would be tracked and sent on kube-proxy's
// DNAT (a reset). A listener on the wildcard address then also counts,
// unlike with iptables' -m socket.
func nftSocketMatch(proto string) string {
	if proto == "tcp" {
		return "socket transparent 0"
	}
	return "socket wildcard 0"
}

func nftFamily(a netip.Addr) string {
	if a.Is6() {
		return "ip6"
	}
	return "ip"
}

// exprs compiles a rule for the inet family.
func (r Rule) exprs() ([]expr.Any, error) {
	var e []expr.Any
	if r.Src.IsValid() {
		e = append(e, addrExprs(r.Src, true)...)
	}
	if r.Dst.IsValid() {
		e = append(e, addrExprs(r.Dst, false)...)
	}
	l4 := byte(unix.IPPROTO_UDP)
	if r.Proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	e = append(e,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
	)
	if r.SPort > 0 {
		e = append(e, portExprs(r.SPort, 0)...)
	}
	if r.DPort > 0 {
		e = append(e, portExprs(r.DPort, 2)...)
	}
	if r.Socket {
		// A socket takes the packet (see nftSocketMatch).
		key := expr.SocketKeyWildcard
		if r.Proto == "tcp" {
			key = expr.SocketKeyTransparent
		}
		e = append(e,
			&expr.Socket{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
		)
	}
	if r.Target == TargetSetDst {
		// ct state new: conntrack has the packet's own destination already.
		e = append(e,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: encbin.NativeEndian.AppendUint32(nil, expr.CtStateBitNEW), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		)
	}
	e = append(e, &expr.Counter{})
	switch r.Target {
	case TargetNotrack:
		return append(e, &expr.Notrack{}), nil
	case TargetAccept:
		return append(e, &expr.Verdict{Kind: expr.VerdictAccept}), nil
	case TargetDNAT:
		fam := uint32(unix.NFPROTO_IPV4)
		if r.To.Addr().Is6() {
			fam = unix.NFPROTO_IPV6
		}
		return append(e,
			&expr.Immediate{Register: 1, Data: r.To.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: encbin.BigEndian.AppendUint16(nil, r.To.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		), nil
	case TargetSetDst:
		// The destination address in place, with the checksums that cover
		// it: the IPv4 header's, and the transport's pseudo-header.
		to := r.To.Addr()
		w := &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader,
			Offset: 16, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
		if to.Is6() {
			w.Offset, w.Len, w.CsumType, w.CsumOffset = 24, 16, expr.CsumTypeNone, 0
		}
		return append(e, &expr.Immediate{Register: 1, Data: to.AsSlice()}, w), nil
	}
	return nil, fmt.Errorf("rule %q: nftables cannot jump to iptables chain %s", r.Nft(), r.Target)
}

// addrExprs match the packet's family and its source or destination address.
func addrExprs(a netip.Addr, src bool) []expr.Any {
	nfproto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4) // IPv4 daddr
	if a.Is6() {
		nfproto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	if src {
		off -= n // saddr sits right before daddr in both headers
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// portExprs match the transport header's port at off (0 source, 2 destination).
func portExprs(port int, off uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: encbin.BigEndian.AppendUint16(nil, uint16(port))},
	}
}

// nftConn opens a netlink connection in the calling thread's namespace.
func nftConn() (*nftables.Conn, error) { return nftables.New() }

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
				wantText[i] = r.Nft()
			}
			switch {
			case !ok:
				changes = append(changes, fmt.Sprintf("chain %s created in table inet %s", ch.Name, NftTable))
			case !slices.Equal(got, wantText):
				missing, extra := diff(wantText, got)
				changes = append(changes, fmt.Sprintf("chain %s rewritten in table inet %s (%d rules missing, %d unexpected)", ch.Name, NftTable, missing, extra))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(have)) {
			if !slices.ContainsFunc(want, func(c NftChain) bool { return c.Name == name }) {
				changes = append(changes, fmt.Sprintf("chain %s removed from table inet %s", name, NftTable))
			}
		}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if exists {
		c.DelTable(table)
	}
	c.AddTable(table)
	if err := addChains(c, table, want); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, nftErr("write table inet "+NftTable, err)
	}
	return changes, nil
}

// addChains queues the chains and their rules on c.
func addChains(c *nftables.Conn, table *nftables.Table, chains []NftChain) error {
	accept := nftables.ChainPolicyAccept
	for _, ch := range chains {
		chain := c.AddChain(&nftables.Chain{Name: ch.Name, Table: table, Type: ch.Type, Hooknum: ch.Hook, Priority: ch.Priority, Policy: &accept})
		for _, r := range ch.Rules {
			e, err := r.exprs()
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: e, UserData: []byte(r.Nft())})
		}
	}
	return nil
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
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == table.Name }) {
		return nil, false, nil
	}
	have := map[string][]string{}
	for _, ch := range chains {
		if ch.Table.Name != table.Name {
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
