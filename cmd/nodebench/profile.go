package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A profile of this build while it answers cache hits: where a hit's CPU
// goes, kernel or user space, and in which functions, so the ratios to
// unbound come with what explains them.

// profiled wraps a hit run: perf samples the server process pid for d
// while load runs, and the report goes to out/bench/profile.txt. It
// returns load's error; without perf, or when perf fails, the run goes on
// and a note says why there is no profile.
func (b *bencher) profiled(pid int, d time.Duration, load func() error) error {
	if _, err := exec.LookPath("perf"); err != nil {
		b.rep.Notes = append(b.rep.Notes, "No profile of this build: perf is not installed (Debian package linux-perf).")
		return load()
	}
	data := filepath.Join(b.raw, "this.perf.data")
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	rec := exec.CommandContext(ctx, "perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g",
		"-p", strconv.Itoa(pid), "-o", data, "--", "sleep", strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
	if err := rec.Start(); err != nil {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("No profile of this build: start perf: %v.", err))
		return load()
	}
	err := load()
	if werr := rec.Wait(); werr != nil {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("No profile of this build: perf record: %v.", werr))
		return err
	}
	if perr := b.writeProfile(ctx, data); perr != nil {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("No profile of this build: perf report: %v.", perr))
	}
	return err
}

// writeProfile writes profile.txt (by object, then by function) and adds
// the kernel's share to the notes.
func (b *bencher) writeProfile(ctx context.Context, data string) error {
	byDSO, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", "dso").Output()
	if err != nil {
		return err
	}
	bySym, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", "dso,sym", "--percent-limit", "0.5").Output()
	if err != nil {
		return err
	}
	out := filepath.Join(b.o.out, "profile.txt")
	text := "# this build (bin/coredns, Corefile.example) answering cache hits from bin/dnsblast in the last round;\n" +
		"# perf record -e cpu-clock -F 999 -g -p PID. bin/coredns is stripped (-s -w), so its own functions show as addresses.\n\n" +
		string(byDSO) + "\n" + string(bySym)
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	if k, ok := kernelShare(string(byDSO)); ok {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("Profile of this build answering cache hits (last round, bin/dnsblast): %.0f %% of its CPU samples are in the kernel (system calls, UDP, scheduling), nearly all the rest in bin/coredns itself; by object and function in %s.", k, out))
	}
	return nil
}

// kernelShare reads the kernel's percentage from `perf report --sort dso`.
func kernelShare(report string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[1] == "[kernel.kallsyms]" {
			v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			return v, err == nil
		}
	}
	return 0, false
}
