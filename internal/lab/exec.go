package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// run runs a command and returns its combined output, naming the command in
// the error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	return runInput(ctx, "", name, args...)
}

// runInput is run with stdin.
func runInput(ctx context.Context, input, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// nsRun runs a command inside network namespace ns.
func nsRun(ctx context.Context, ns string, name string, args ...string) (string, error) {
	return nsRunInput(ctx, ns, "", name, args...)
}

// nsRunInput is nsRun with stdin.
func nsRunInput(ctx context.Context, ns, input string, name string, args ...string) (string, error) {
	return runInput(ctx, input, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// NodeRun runs a command in the node namespace.
func (l *Lab) NodeRun(ctx context.Context, name string, args ...string) (string, error) {
	return nsRun(ctx, l.Node, name, args...)
}

// NodeRunInput runs a command with stdin in the node namespace.
func (l *Lab) NodeRunInput(ctx context.Context, input, name string, args ...string) (string, error) {
	return nsRunInput(ctx, l.Node, input, name, args...)
}

// PodRun runs a command in a pod's namespace (its resolv.conf applies).
func PodRun(ctx context.Context, pod, name string, args ...string) (string, error) {
	return nsRun(ctx, pod, name, args...)
}
