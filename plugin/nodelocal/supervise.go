package nodelocal

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// Any exit after the plugin changed the node must undo the change (unless a
// live peer needs it): a plugin's log.Fatal at start-up (the loop plugin), a
// listener that cannot bind after OnStartup (caddy.Start fails and CoreDNS
// calls log.Fatal), a panic. os.Exit runs no hook, and a process cannot
// clean up after its own death, so the binary runs as two processes: a
// small supervising parent (Supervise) that starts the server as its child,
// forwards signals to it, and exits with its status; the child tells the
// parent, over a pipe, what it holds on the node before each change and
// when it has given the node up. When the child ends holding something, the
// parent undoes it the way the child's own teardown would, beside the live
// peers it finds in the state directory. In a container the parent is PID
// 1, so the child's death does not take it down.
//
// A SIGKILL of the parent (the OOM killer, kubelet after the grace period)
// kills the child with it (PR_SET_PDEATHSIG), and nothing is undone, as
// for any SIGKILL: the socket-guarded rules make that harmless.

// Environment of the supervised child.
const (
	// SuperviseEnv set to "off" runs the server without a supervising parent.
	SuperviseEnv = "NODELOCAL_SUPERVISE"
	// holdFDEnv names the child's end of the pipe to the parent.
	holdFDEnv = "NODELOCAL_HOLD_FD"
)

// holding is what the process holds on the node, as the child tells the
// parent; Released once the process has given the node up (torn down,
// handed over, or left in place on purpose).
type holding struct {
	Link     netif.Spec `json:"link"`
	Rules    rules.Spec `json:"rules"`
	Teardown Teardown   `json:"teardown"`
	Upstream netip.Addr `json:"upstream"`
	StateDir string     `json:"statedir"`
	Released bool       `json:"released,omitempty"`
}

// Supervise runs the command line again as a child and supervises it (see
// above). It returns the exit code for the caller to exit with, and false
// when the process is itself the child (or supervision is off) and should
// run the server. Call it first in main.
func Supervise() (int, bool) {
	if os.Getenv(holdFDEnv) != "" || os.Getenv(SuperviseEnv) == "off" {
		return 0, false
	}
	// The parent-death signal is tied to the thread that started the
	// child: keep it for the life of the process.
	runtime.LockOSThread()
	exe, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("supervise: %w", err))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("supervise: %w", err))
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), holdFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	// Its own process group: a terminal's Ctrl-C reaches the parent only,
	// which forwards it once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("supervise: start %s: %w", exe, err))
	}
	w.Close()
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	last := make(chan *holding, 1)
	go func() { last <- readHoldings(r) }()
	err = cmd.Wait()
	h := <-last
	if h != nil && !h.Released {
		why := "exited"
		if err != nil {
			why = err.Error()
		}
		if uerr := undo(*h); uerr != nil {
			log.Errorf("The cache ended (%s) holding %s; undoing it failed: %v", why, describe(hostSpec{link: h.Link, rules: h.Rules}), uerr)
		} else {
			log.Infof("The cache ended (%s) without giving the node up: undone", why)
		}
	}
	return exitCode(cmd.ProcessState), true
}

func fail(err error) (int, bool) {
	fmt.Fprintln(os.Stderr, err)
	return 1, true
}

// readHoldings reads the child's messages until it exits and returns the
// last one; nil when it sent none.
func readHoldings(r *os.File) *holding {
	defer r.Close()
	var last *holding
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var h holding
		if json.Unmarshal(sc.Bytes(), &h) == nil {
			last = &h
		}
	}
	return last
}

// exitCode is the child's exit status, 128+N for a death by signal N, as
// a shell reports it.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// undo does what the dead child's teardown would have: beside live peers,
// it removes what none of them needs; alone, what `teardown` says.
func undo(h holding) error {
	hs := hostSpec{link: h.Link, rules: h.Rules}
	if h.Teardown == TeardownOff {
		log.Infof("Teardown off: leaving %s in place", describe(hs))
		return nil
	}
	host, err := newSystemHost(Config{Rules: h.Rules.Mode, Backend: h.Rules.Backend, LocalIPs: h.Rules.LocalIPs})
	if err != nil {
		return err
	}
	var peers []*hostSpec
	if h.StateDir != "" {
		p := &presence{dir: h.StateDir, ns: netnsID()}
		if unlock, err := p.Lock(); err == nil {
			defer unlock()
		}
		if peers, err = p.others(""); err != nil {
			log.Warningf("Cannot see other instances on this node, acting as the last one: %v", err)
		}
	}
	if len(peers) > 0 {
		_, err := leaveBeside(host, hs, peers)
		return err
	}
	if h.Teardown == TeardownHandoff {
		// The standing fallback (failopen) carries DNS to the local IPs
		// while no cache runs: leave it all, as the child's teardown would.
		log.Infof("Teardown handoff: leaving %s in place", describe(hs))
		return nil
	}
	return remove(host, hs)
}

// holdPipe is the child's end of the pipe to a supervising parent; nil
// when the process is not supervised.
var holdPipe = sync.OnceValue(func() *os.File {
	fd, err := strconv.Atoi(os.Getenv(holdFDEnv))
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "supervisor")
})

// tellSupervisor sends h to the supervising parent, if there is one.
func tellSupervisor(h holding) {
	f := holdPipe()
	if f == nil {
		return
	}
	data, err := json.Marshal(h)
	if err != nil {
		return
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		log.Warningf("Cannot tell the supervising process what this one holds on the node: %v", err)
	}
}
