package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// Runner reads and writes the tables of one address family in one iptables
// backend, as iptables-save and iptables-restore --noflush do. The Manager
// keeps all its logic on this side of it, so tests can run that logic
// against a fake holding table text.
type Runner interface {
	// Name is the command the runner stands for (e.g. ip6tables-nft), for messages.
	Name() string
	// Present fails, naming the binary, when the runner cannot work here.
	Present() error
	// Save returns one table (all tables for "") in iptables-save form.
	Save(table string) (string, error)
	// Restore applies input atomically, per table, with --noflush semantics.
	Restore(input string) error
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

// execRunner runs the iptables binaries of one family and backend.
type execRunner struct {
	m *Manager
	f family
	b Backend
}

func (r execRunner) Name() string { return binary(r.f, r.b, "") }

func (r execRunner) Present() error {
	for _, kind := range []string{"", "save", "restore"} {
		if _, err := exec.LookPath(binary(r.f, r.b, kind)); err != nil {
			return fmt.Errorf("%s not found in PATH: install the iptables package", binary(r.f, r.b, kind))
		}
	}
	return nil
}

func (r execRunner) Save(table string) (string, error) {
	var args []string
	if table != "" {
		args = []string{"-t", table}
	}
	return r.m.run("", binary(r.f, r.b, "save"), args...)
}

func (r execRunner) Restore(input string) error {
	name := binary(r.f, r.b, "restore")
	r.m.mu.Lock()
	w, ok := r.m.waitArgv[name]
	if !ok {
		w = r.waitArgs()
		r.m.waitArgv[name] = w
	}
	r.m.mu.Unlock()
	_, err := r.m.run(input, name, append([]string{"--noflush"}, w...)...)
	return err
}

// waitArgs returns the -w form the installed iptables supports: restore
// takes -w SECONDS since 1.6.2; older ones have no lock wait at all.
func (r execRunner) waitArgs() []string {
	secs := int((r.m.wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	path, err := exec.LookPath(binary(r.f, r.b, ""))
	if err != nil {
		return []string{"-w", fmt.Sprint(secs)}
	}
	proto := iptables.ProtocolIPv4
	if r.f.ipv6 {
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
