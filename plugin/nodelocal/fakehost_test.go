package nodelocal

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// fakeHost is an in-memory node: links with addresses and an up flag, and
// the rule set per home. It records each change it makes, in order.
type fakeHost struct {
	mu    sync.Mutex
	links map[string]*fakeLink
	rules map[string]string // home (mode/backend) -> rendered spec
	ops   []string          // "add link x", "add address a", "set rules", "remove rules", "remove address a", "remove link x"

	failRules error // EnsureRules returns this when set
	noSocket  error // SocketMatch returns this when set
}

type fakeLink struct {
	up    bool
	addrs []netip.Addr
}

func newFakeHost() *fakeHost {
	return &fakeHost{links: map[string]*fakeLink{}, rules: map[string]string{}}
}

func home(s rules.Spec) string { return string(s.Mode) + "/" + string(s.Backend) }

func (f *fakeHost) EnsureLink(s netif.Spec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var changes []string
	l, ok := f.links[s.Name]
	if !ok {
		l = &fakeLink{}
		f.links[s.Name] = l
		f.ops = append(f.ops, "add link "+s.Name)
		changes = append(changes, "link "+s.Name+" created")
	}
	if !l.up {
		l.up = true
		changes = append(changes, "link "+s.Name+" set up")
	}
	for _, a := range s.Addrs {
		if !slices.Contains(l.addrs, a) {
			l.addrs = append(l.addrs, a)
			f.ops = append(f.ops, "add address "+a.String())
			changes = append(changes, "address "+a.String()+" added")
		}
	}
	return changes, nil
}

func (f *fakeHost) RemoveLink(s netif.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[s.Name]
	if !ok {
		return nil
	}
	for _, a := range s.Addrs {
		if i := slices.Index(l.addrs, a); i >= 0 {
			l.addrs = slices.Delete(l.addrs, i, i+1)
			f.ops = append(f.ops, "remove address "+a.String())
		}
	}
	if len(l.addrs) == 0 {
		delete(f.links, s.Name)
		f.ops = append(f.ops, "remove link "+s.Name)
	}
	return nil
}

func (f *fakeHost) EnsureRules(s rules.Spec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRules != nil {
		return nil, f.failRules
	}
	want := fmt.Sprint(s.LocalIPs, s.DNSPorts, s.HealthPort)
	if len(s.MoreHealthPorts) > 0 {
		want += fmt.Sprint(" ", s.MoreHealthPorts)
	}
	if s.Guard {
		// As the real backend, unguarded on a kernel without the match.
		if f.noSocket != nil {
			want += " unguarded"
		} else {
			want += fmt.Sprint(" guarded, fallback ", s.Fallback, "->", s.Upstream)
		}
	}
	if s.Drain {
		want += " draining"
	}
	if f.rules[home(s)] == want {
		return nil, nil
	}
	f.rules[home(s)] = want
	f.ops = append(f.ops, "set rules "+home(s))
	return []string{"rule set " + home(s) + " written"}, nil
}

func (f *fakeHost) RemoveRules(s rules.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.rules[home(s)]; ok {
		delete(f.rules, home(s))
		f.ops = append(f.ops, "remove rules "+home(s))
	}
	return nil
}

func (f *fakeHost) SocketMatch(rules.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.noSocket
}

// state describes the node as a user would inspect it: links, addresses, rules.
func (f *fakeHost) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for name, l := range f.links {
		addrs := slices.Clone(l.addrs)
		slices.SortFunc(addrs, netip.Addr.Compare)
		parts = append(parts, fmt.Sprintf("link %s up=%v %v", name, l.up, addrs))
	}
	for h, r := range f.rules {
		parts = append(parts, "rules "+h+" "+r)
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func (f *fakeHost) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// tamper runs fn on the fake's state, as another program on the node would.
func (f *fakeHost) tamper(fn func(links map[string]*fakeLink, rules map[string]string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.links, f.rules)
}

// fakeSystem is a node in memory: one fakeHost for every instance, this
// process's listeners open or not, steering and receive buffers recorded,
// and the other instances on the node: a count of ones whose needs are
// unknown, and the presences in the state directory, which other
// fakeSystems on the same node (sameNode) share.
type fakeSystem struct {
	host *fakeHost
	dir  *fakeDir

	mu        sync.Mutex
	hostErr   error // Host fails with it when set
	closed    bool  // the listeners are not open yet
	steered   [][]netip.Addr
	rcvBufs   map[int]bool // sizes asked for
	peers     int          // other live instances on the node, needs unknown
	announced []string     // state directories announced in, in order
	present   int          // presences not yet left
	held      *holding     // what the process last said it holds
}

func newFakeSystem() *fakeSystem {
	return &fakeSystem{host: newFakeHost(), dir: &fakeDir{}, rcvBufs: map[int]bool{}}
}

// sameNode returns another process's system on the same node: the same
// host and state directory.
func (s *fakeSystem) sameNode() *fakeSystem {
	return &fakeSystem{host: s.host, dir: s.dir, rcvBufs: map[int]bool{}}
}

// fakeDir is a state directory: the live presences and what each published.
type fakeDir struct {
	node  sync.Mutex // the node lock
	mu    sync.Mutex
	live  []*fakePresence
	dead  []*hostSpec // needs of presences killed, until a live one looks
	needs map[*fakePresence]hostSpec
}

func (s *fakeSystem) Host(Config) (Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hostErr != nil {
		return nil, s.hostErr
	}
	return s.host, nil
}

func (s *fakeSystem) Listening([]netip.Addr, []int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed
}

func (s *fakeSystem) Steer(ips []netip.Addr, _ []int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steered = append(s.steered, ips)
	return 1, nil
}

func (s *fakeSystem) RaiseRcvBuf(_ []netip.Addr, _ []int, size int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcvBufs[size] = true
	return 0, nil
}

func (s *fakeSystem) Announce(dir string) (Presence, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announced = append(s.announced, dir)
	s.present++
	p := &fakePresence{s: s}
	s.dir.mu.Lock()
	defer s.dir.mu.Unlock()
	s.dir.live = append(s.dir.live, p)
	return p, nil
}

func (s *fakeSystem) Hold(h holding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = &h
}

// set changes the fake under its lock.
func (s *fakeSystem) set(fn func(s *fakeSystem)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

// get reads the fake under its lock.
func (s *fakeSystem) get(fn func(s *fakeSystem)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

type fakePresence struct{ s *fakeSystem }

func (p *fakePresence) Publish(hs hostSpec) error {
	d := p.s.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.needs == nil {
		d.needs = map[*fakePresence]hostSpec{}
	}
	d.needs[p] = hs
	return nil
}

func (p *fakePresence) Others() ([]*hostSpec, error) {
	p.s.mu.Lock()
	unknown := p.s.peers
	p.s.mu.Unlock()
	peers := make([]*hostSpec, unknown)
	d := p.s.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.live {
		if o == p {
			continue
		}
		if hs, ok := d.needs[o]; ok {
			peers = append(peers, &hs)
		} else {
			peers = append(peers, nil)
		}
	}
	return peers, nil
}

func (p *fakePresence) Departed() []*hostSpec {
	d := p.s.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	gone := d.dead
	d.dead = nil
	return gone
}

// kill ends the presence as SIGKILL does: its needs stay behind.
func (p *fakePresence) kill() {
	d := p.s.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	d.live = slices.DeleteFunc(d.live, func(o *fakePresence) bool { return o == p })
	if hs, ok := d.needs[p]; ok {
		d.dead = append(d.dead, &hs)
	}
	delete(d.needs, p)
}

func (p *fakePresence) Lock() (func(), error) {
	p.s.dir.node.Lock()
	return p.s.dir.node.Unlock, nil
}

func (p *fakePresence) Leave() ([]*hostSpec, error) {
	p.s.mu.Lock()
	p.s.present--
	p.s.mu.Unlock()
	d := p.s.dir
	d.mu.Lock()
	d.live = slices.DeleteFunc(d.live, func(o *fakePresence) bool { return o == p })
	delete(d.needs, p)
	d.mu.Unlock()
	return p.Others()
}
