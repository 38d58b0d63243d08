package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process the lab started inside a namespace.
type Proc struct {
	Name string
	Log  string // file holding its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid once done is closed
}

// Start runs bin with args inside namespace ns, pinned to the server CPU
// when one is configured, with its output in a log file of the run
// directory. `ip netns exec` and taskset exec the program, so the PID is the
// program's own. The process gets its own process group: Ctrl-C reaches only
// the lab, which then stops it in order.
func (l *Lab) Start(ctx context.Context, ns, name string, env []string, bin string, args ...string) (*Proc, error) {
	return l.StartOn(ctx, ns, name, l.cfg.ServerCPU, env, bin, args...)
}

// StartOn is Start pinned to cpus (a taskset CPU list, "" for none)
// instead of the server CPU.
func (l *Lab) StartOn(ctx context.Context, ns, name, cpus string, env []string, bin string, args ...string) (*Proc, error) {
	p, err := l.start(ns, name, cpus, env, bin, args...)
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	return p, nil
}

func (l *Lab) start(ns, name, cpus string, env []string, bin string, args ...string) (*Proc, error) {
	argv := []string{"netns", "exec", ns}
	if cpus != "" {
		argv = append(argv, "taskset", "-c", cpus)
	}
	argv = append(argv, bin)
	argv = append(argv, args...)
	logPath := filepath.Join(l.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", argv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.cfg.Logf("started %s (pid %d) in %s", name, cmd.Process.Pid, ns)
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// ServerPID is the PID of the process doing the work: bin/coredns runs as
// a supervising parent with the server as its only child (see
// plugin/nodelocal/supervise.go), so it is that child when there is one,
// else the process itself. CPU and memory figures of a server are its.
func (p *Proc) ServerPID() int {
	pid := p.PID()
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return pid
	}
	if f := strings.Fields(string(kids)); len(f) == 1 {
		if child, err := strconv.Atoi(f[0]); err == nil {
			return child
		}
	}
	return pid
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits at most d for the process to end and reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Stop sends SIGTERM and, if the process has not ended after grace, SIGKILL.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if p.Wait(grace) {
		return nil
	}
	p.cmd.Process.Kill()
	if p.Wait(5 * time.Second) {
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.Name, p.PID(), grace)
	}
	return fmt.Errorf("%s (pid %d) does not end", p.Name, p.PID())
}

// Logged reports whether the process's log holds text.
func (p *Proc) Logged(text string) bool {
	b, _ := os.ReadFile(p.Log)
	return strings.Contains(string(b), text)
}

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
